"""Decoding requests without letting a malformed one become a server error.

``grpc.aio`` decodes each request with the method's ``request_deserializer`` before the
handler runs; a deserializer that raises ends the call ``UNKNOWN`` and logs a traceback --
for a fault of the client's (invalid UTF-8 in a string field, truncated bytes). Here the
deserializer never raises: it returns a :class:`Malformed` standing for the request, and
the handler answers ``INVALID_ARGUMENT`` with the reason, logging it once per client
(:class:`MalformedLog`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

__all__ = ["Malformed", "MalformedLog", "add_handlers"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Malformed:
    """A request that could not be decoded, in place of the message."""

    type_name: str  # the message type expected, e.g. "TransactionBatch"
    size: int
    error: str

    @property
    def reason(self) -> str:
        return f"malformed {self.type_name} ({self.size} bytes): {self.error}"


def lenient(message_type: type[Message]) -> Callable[[bytes], Message | Malformed]:
    """A deserializer for ``message_type`` that returns :class:`Malformed` on bad input."""
    parse = message_type.FromString
    name = message_type.DESCRIPTOR.name

    def deserialize(data: bytes) -> Message | Malformed:
        try:
            return parse(data)
        except DecodeError as error:
            # upb's message names the full type first; the reason after it is what helps.
            reason = str(error).rpartition(": ")[2] or "cannot be decoded"
            return Malformed(name, len(data), reason)

    return deserialize


def add_handlers(
    server: grpc.aio.Server,
    service: str,
    methods: Mapping[str, tuple[Callable[..., Any], type[Message], type[Message], bool]],
) -> None:
    """Register ``service``'s methods: name -> (behaviour, request type, response type,
    streaming); requests are decoded by :func:`lenient` deserializers."""
    handlers = {}
    for name, (behaviour, request, response, streaming) in methods.items():
        make = (
            grpc.stream_stream_rpc_method_handler
            if streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[name] = make(
            behaviour,
            request_deserializer=lenient(request),
            response_serializer=response.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    server.add_registered_method_handlers(service, handlers)


class MalformedLog:
    """Logs a malformed request at most once per client (peer address); remembers the
    last ``capacity`` clients."""

    def __init__(self, capacity: int = 1024) -> None:
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._capacity = capacity

    def report(self, peer: str, malformed: Malformed) -> None:
        count = self._seen.pop(peer, 0) + 1
        self._seen[peer] = count
        if len(self._seen) > self._capacity:
            self._seen.popitem(last=False)
        if count == 1:
            logger.warning(
                "client %s sent a %s; refused INVALID_ARGUMENT (further ones from it are "
                "refused without a log)",
                peer,
                malformed.reason,
            )
