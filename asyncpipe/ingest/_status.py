"""A batch refused as a whole, with the gRPC status and the reason to answer."""

from __future__ import annotations

import grpc

__all__ = ["Refused"]


class Refused(Exception):
    """Raised while handling a batch that is refused as a whole: nothing of it was taken.

    A unary call ends with ``code`` and ``message``; on a stream it becomes a reply with
    ``success`` false and ``"<CODE>: <message>"``."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
