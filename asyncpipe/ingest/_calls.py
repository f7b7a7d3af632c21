"""The server's own count of calls in flight, so a graceful stop waits for them only.

``grpc.aio``'s ``server.stop(grace)`` waits out the whole grace for a connection that
never started a call (a silent TCP connection, or one that sent only the HTTP/2 preface):
one such connection made every graceful stop take the full grace. The server counts the
calls its handlers are running; a graceful stop waits for those (up to the grace), then
stops at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["CallTracker"]


class CallTracker:
    """Counts calls being handled; :meth:`wait_idle` returns once there are none."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextmanager
    def call(self) -> Iterator[None]:
        """Count the ``with`` body as a call in flight."""
        self.count += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.count -= 1
            if self.count == 0:
                self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()
