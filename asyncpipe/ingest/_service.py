"""A gRPC service description made servable: its methods, their messages and routes.

:class:`IngestServer` serves any service (a ``ServiceDescriptor`` from generated
``*_pb2`` code, e.g. ``my_pb2.DESCRIPTOR.services_by_name["MyService"]``) whose methods
fit one of two shapes:

* **unary**, ``rpc M(Batch) returns (Reply)``: ``Batch`` has a string batch id and a
  repeated field of items (both named by the method's :class:`Route`); a method without a
  route answers ``UNIMPLEMENTED``;
* **stream**, ``rpc S(stream Request) returns (stream Reply)``: ``Request`` has one
  ``oneof`` of batch messages; each member is routed as the unary method taking that
  batch type (none: that member is answered ``UNIMPLEMENTED``).

Every ``Reply`` has the fields the server fills in, by name (:data:`REPLY_FIELDS`), and a
repeated ``rejections`` message with ``index`` and ``reason``: a user's proto declares
its own, so it needs none of asyncpipe's ``.proto`` files to compile. The shape is checked
when the server is built, so a mismatch is a ``ValueError`` naming the field, not a
failure at the first call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from ._routes import Route

__all__ = ["REPLY_FIELDS", "Method", "Service"]

_F = FieldDescriptor
_INTEGER = frozenset({_F.CPPTYPE_INT32, _F.CPPTYPE_INT64, _F.CPPTYPE_UINT32, _F.CPPTYPE_UINT64})
_STRING = frozenset({_F.CPPTYPE_STRING})

#: The reply's fields the server sets, with the types each may have.
REPLY_FIELDS: dict[str, frozenset[int]] = {
    "success": frozenset({_F.CPPTYPE_BOOL}),
    "message": _STRING,
    "batch_id": _STRING,
    "items_received": _INTEGER,
    "items_processed": _INTEGER,
    "items_rejected": _INTEGER,
    "processing_duration_seconds": frozenset({_F.CPPTYPE_DOUBLE, _F.CPPTYPE_FLOAT}),
}
_REJECTION_FIELDS = {"index": _INTEGER, "reason": _STRING}


@dataclass(frozen=True, slots=True)
class Method:
    """One method served: its messages, and its route (unary) or routes per oneof member
    (stream; None for a member no unary method routes)."""

    name: str
    request: type[Message]
    reply: type[Message]
    streaming: bool
    route: Route | None = None
    oneof: str = ""
    members: Mapping[str, Route | None] = field(default_factory=dict)


class Service:
    """``descriptor``'s methods with ``routes`` (method name -> :class:`Route`), checked
    (see the module docstring); raises ``ValueError`` for a service it cannot serve."""

    def __init__(self, descriptor: ServiceDescriptor, routes: Mapping[str, Route]) -> None:
        if not isinstance(descriptor, ServiceDescriptor):
            raise TypeError(
                "IngestServer: service must be a ServiceDescriptor, e.g. "
                f'my_pb2.DESCRIPTOR.services_by_name["MyService"]; got {type(descriptor).__name__}'
            )
        self.name: str = descriptor.full_name
        unary = [m for m in descriptor.methods if not (m.client_streaming or m.server_streaming)]
        unknown = sorted(set(routes) - {m.name for m in unary})
        if unknown:
            raise ValueError(
                f"IngestServer: {self.name} has no unary method {', '.join(unknown)}; its "
                f"unary methods: {', '.join(m.name for m in unary)}"
            )
        by_request: dict[str, Route | None] = {}
        self.methods: dict[str, Method] = {}
        for method in unary:
            route = routes.get(method.name)
            if route is not None:
                _check_request(method.input_type, route, method.name)
            by_request.setdefault(method.input_type.full_name, route)
            self.methods[method.name] = Method(
                method.name, _message(method.input_type), _reply(method), False, route
            )
        for method in descriptor.methods:
            if method.name not in self.methods:
                self.methods[method.name] = _stream(method, by_request)

    @property
    def routes(self) -> list[Route]:
        """Every route of the service, once each."""
        return [m.route for m in self.methods.values() if m.route is not None]


def _message(descriptor: Descriptor) -> type[Message]:
    cls: type[Message] = GetMessageClass(descriptor)
    return cls


def _stream(method: Any, by_request: Mapping[str, Route | None]) -> Method:
    if not (method.client_streaming and method.server_streaming):
        raise ValueError(
            f"IngestServer: cannot serve {method.full_name}: a method is either unary (one "
            "batch, one reply) or streams both ways"
        )
    oneofs = method.input_type.oneofs
    if len(oneofs) != 1 or any(f.message_type is None for f in oneofs[0].fields):
        raise ValueError(
            f"IngestServer: the requests of {method.full_name} ({method.input_type.name}) "
            "must hold one oneof of batch messages"
        )
    members = {f.name: by_request.get(f.message_type.full_name) for f in oneofs[0].fields}
    return Method(
        method.name,
        _message(method.input_type),
        _reply(method),
        True,
        oneof=oneofs[0].name,
        members=members,
    )


def _check_request(descriptor: Descriptor, route: Route, method: str) -> None:
    fields = descriptor.fields_by_name
    items = fields.get(route.items)
    if items is None or not items.is_repeated:
        raise ValueError(
            f"IngestServer: route of {method}: {descriptor.name} has no repeated field "
            f"{route.items!r}; its fields: {', '.join(fields)}"
        )
    batch_id = fields.get(route.batch_id)
    if batch_id is None or batch_id.is_repeated or batch_id.cpp_type not in _STRING:
        raise ValueError(
            f"IngestServer: route of {method}: {descriptor.name} has no string field "
            f"{route.batch_id!r} (the batch id); its fields: {', '.join(fields)}"
        )


def _reply(method: Any) -> type[Message]:
    descriptor: Descriptor = method.output_type
    _check_fields(descriptor, REPLY_FIELDS, f"the reply of {method.name}")
    rejections = descriptor.fields_by_name.get("rejections")
    if rejections is None or not rejections.is_repeated or rejections.message_type is None:
        raise ValueError(
            f"IngestServer: the reply of {method.name} ({descriptor.name}) needs a repeated "
            "message field 'rejections' (with int32 index and string reason)"
        )
    _check_fields(rejections.message_type, _REJECTION_FIELDS, f"{descriptor.name}.rejections")
    return _message(descriptor)


def _check_fields(descriptor: Descriptor, wanted: Mapping[str, frozenset[int]], what: str) -> None:
    fields = descriptor.fields_by_name
    for name, types in wanted.items():
        found = fields.get(name)
        if found is None or found.is_repeated or found.cpp_type not in types:
            raise ValueError(
                f"IngestServer: {what} ({descriptor.name}) needs a field {name!r} like "
                f"asyncpipe's IngestResponse: {', '.join(wanted)}"
            )
