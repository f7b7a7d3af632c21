"""An async client of a service served by :class:`IngestServer`, for applications and the
load test.

One ``grpc.aio`` channel is reused for every call; the client is built from the same
``ServiceDescriptor`` as the server, so it needs no generated stub. Each call has a
deadline; a batch that was not acknowledged -- the server was unavailable, saturated
(``RESOURCE_EXHAUSTED``), restarting, or the deadline passed -- is sent again with the
*same* ``batch_id``, with exponential backoff, up to ``retries`` times. Sinks upsert, so a
batch stored before its reply was lost is not duplicated by the retry::

    service = sensors_pb2.DESCRIPTOR.services_by_name["Sensors"]
    async with IngestClient("127.0.0.1:50051", service) as client:
        reply = await client.send(sensors_pb2.ReadingBatch(batch_id=new_batch_id(), ...))
        assert reply.success, reply.message

A reply with ``success`` false (items failed inside the pipeline) is returned, not
retried: sending the same items again would fail the same way. Items that are invalid are
listed in ``reply.rejections``; they are not errors either. The client expects each
batch's id in a field named ``batch_id``.

A server that has never answered is not waited for: if nothing listens at the target
(connection refused, unknown host), the first call raises ``ConnectionRefusedError`` (or
``ConnectionError``) "no server at host:port (...)" at once instead of retrying until
its deadlines pass. Pass ``wait_for_server=True`` to wait for a server that is starting.
Once a call has been answered, an unreachable server is a restart: calls wait and retry.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["RETRYABLE", "IngestClient", "IngestStream", "new_batch_id"]

logger = logging.getLogger(__name__)

#: Status codes after which a batch was certainly or possibly not stored: sent again.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
    }
)


def new_batch_id() -> str:
    """A fresh, unique batch id (a UUID4 in hex)."""
    return uuid.uuid4().hex


def _path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def _only(methods: list[MethodDescriptor], what: str, service: str) -> MethodDescriptor:
    if len(methods) != 1:
        names = ", ".join(m.name for m in methods) or "none"
        raise ValueError(f"{service}: name the method: {what}: {names}")
    return methods[0]


class IngestClient:
    """A connection to an ingestion server (see the module docstring).

    Args:
        target: ``host:port``.
        service: the service the server serves (``my_pb2.DESCRIPTOR.services_by_name[...]``).
        timeout: deadline of each attempt, in seconds.
        retries: attempts after the first for a batch that was not acknowledged.
        backoff, max_backoff: the first pause between attempts and its cap (doubling,
            with jitter).
        wait_for_ready: let a call wait (within its deadline) for the server to be
            reachable instead of failing at once, e.g. while it restarts.
        wait_for_server: before any call has been answered, wait for the server as
            after (``wait_for_ready`` and retries) instead of raising
            ``ConnectionError`` at once; for a client started with or before its server.
    """

    def __init__(
        self,
        target: str,
        service: ServiceDescriptor,
        *,
        timeout: float = 10.0,
        retries: int = 5,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        wait_for_ready: bool = True,
        wait_for_server: bool = False,
        max_message_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.target = target
        self.service = service
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.wait_for_ready = wait_for_ready
        self.wait_for_server = wait_for_server
        self._answered = False  # a call has been answered: a server exists at the target
        self._channel = grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                # Reconnect quickly after a server restart (defaults: 1 s, up to 120 s).
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
                # A connection of its own: gRPC otherwise shares one between the channels
                # of a process to the same target, so N clients would be one connection
                # -- and one server process of several sharing the port (SO_REUSEPORT
                # spreads connections, not calls).
                ("grpc.use_local_subchannel_pool", 1),
            ],
        )
        self._calls: dict[str, Any] = {}  # method name -> its multicallable

    def __repr__(self) -> str:
        return f"<IngestClient {self.target}>"

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _unary(self, batch: Message, name: str | None) -> Any:
        """The multicallable of the unary method ``name``, or of the one method taking
        ``batch``'s type."""
        if name is None:
            taking = [
                m
                for m in self.service.methods
                if m.input_type.full_name == batch.DESCRIPTOR.full_name
                and not (m.client_streaming or m.server_streaming)
            ]
            name = _only(
                taking, f"unary methods taking {batch.DESCRIPTOR.name}", self.service.name
            ).name
        call = self._calls.get(name)
        if call is None:
            method = self.service.methods_by_name[name]
            call = self._calls[name] = self._channel.unary_unary(
                _path(method),
                request_serializer=GetMessageClass(method.input_type).SerializeToString,
                response_deserializer=GetMessageClass(method.output_type).FromString,
            )
        return call

    async def send(
        self, batch: Message, *, method: str | None = None, timeout: float | None = None
    ) -> Any:
        """Send one batch to ``method`` (by default the one unary method taking its type),
        retrying it (same ``batch_id``) until acknowledged; returns the reply.

        Raises ``grpc.aio.AioRpcError`` for a status that is not worth retrying
        (``INVALID_ARGUMENT``...) or once the retries are spent, and
        ``ConnectionRefusedError``/``ConnectionError`` if no server was ever reached at
        the target (unless ``wait_for_server``).
        """
        call = self._unary(batch, method)
        attempt = 0
        while True:
            try:
                reply = await call(
                    batch,
                    timeout=self.timeout if timeout is None else timeout,
                    wait_for_ready=self._waits(),
                )
            except grpc.aio.AioRpcError as error:
                self._check_server(error)
                if error.code() not in RETRYABLE or attempt >= self.retries:
                    raise
                pause = min(self.max_backoff, self.backoff * 2**attempt)
                attempt += 1
                logger.info(
                    "batch %s: %s (%s); attempt %d in %.2fs",
                    getattr(batch, "batch_id", "?"),
                    error.code().name,
                    error.details(),
                    attempt + 1,
                    pause,
                )
                await asyncio.sleep(pause * random.uniform(0.5, 1.0))
            else:
                self._answered = True
                return reply

    def _waits(self) -> bool:
        """``wait_for_ready`` for the next call: not before a server was ever reached,
        so that a missing server fails at once (:meth:`_check_server`)."""
        return self.wait_for_ready and (self._answered or self.wait_for_server)

    def _check_server(self, error: grpc.aio.AioRpcError) -> None:
        """Raise ``ConnectionError`` if ``error`` says no server is reachable at the target
        and none ever answered (a wrong address, a server not started)."""
        code = error.code()
        if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            self._answered = True  # a status from a server: one is there
        if self._answered or self.wait_for_server or code is not grpc.StatusCode.UNAVAILABLE:
            return
        details = error.details() or ""
        if "connection refused" in details.lower():
            raise ConnectionRefusedError(
                f"no server at {self.target} (connection refused); start it first, or "
                "pass wait_for_server=True to wait for it"
            ) from error
        raise ConnectionError(
            f"no server at {self.target} ({details}); pass wait_for_server=True to wait for it"
        ) from error

    def stream(self, method: str | None = None, *, timeout: float | None = None) -> IngestStream:
        """A call of the stream method ``method`` (by default the service's one stream
        method): ``async with client.stream() as s: reply = await s.send(batch)``; many
        sends may be in flight at once."""
        if method is None:
            streams = [m for m in self.service.methods if m.client_streaming]
            found = _only(streams, "stream methods", self.service.name)
        else:
            found = self.service.methods_by_name[method]
        request = GetMessageClass(found.input_type)
        call = self._channel.stream_stream(
            _path(found),
            request_serializer=request.SerializeToString,
            response_deserializer=GetMessageClass(found.output_type).FromString,
        )
        return IngestStream(call, request, timeout=timeout)

    async def health(self, service: str = "", *, timeout: float = 5.0) -> str:
        """The server's health status name (``"SERVING"``, ``"NOT_SERVING"``...)."""
        stub: Any = health_pb2_grpc.HealthStub(self._channel)  # its stubs type a sync channel
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=service),
                timeout=timeout,
                wait_for_ready=self._waits(),
            )
        except grpc.aio.AioRpcError as error:
            self._check_server(error)
            raise
        self._answered = True
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


class IngestStream:
    """One stream call; replies are matched to sends by ``batch_id``. Each batch sent is
    wrapped in the stream's request message, in the ``oneof`` member of its type.

    Not retried as a whole: if the call fails, every pending ``send()`` raises the error
    and the caller sends those batches again (on a new stream or by unary calls).
    """

    def __init__(
        self,
        open_call: Callable[..., Any],
        request: type[Message],
        *,
        timeout: float | None,
    ) -> None:
        self._open_call = open_call
        self._request = request
        oneofs = request.DESCRIPTOR.oneofs
        #: batch type (full name) -> the request's oneof member holding it
        self._members = {
            f.message_type.full_name: f.name
            for oneof in oneofs
            for f in oneof.fields
            if f.message_type is not None
        }
        self._timeout = timeout
        self._call: Any = None
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._writing = asyncio.Lock()  # grpc.aio takes one write at a time

    async def __aenter__(self) -> IngestStream:
        self._call = self._open_call(timeout=self._timeout)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._reader is not None
        if exc is None:
            await self._call.done_writing()
            await self._reader
        else:
            self._call.cancel()
            self._reader.cancel()
            await asyncio.wait([self._reader])

    async def send(self, batch: Message) -> Any:
        """Send one batch on the stream and wait for its reply."""
        if self._failure is not None:
            raise self._failure
        member = self._members.get(batch.DESCRIPTOR.full_name)
        if member is None:
            raise TypeError(f"a {self._request.DESCRIPTOR.name} holds no {batch.DESCRIPTOR.name}")
        batch_id: str = getattr(batch, "batch_id", "")
        if not batch_id or batch_id in self._pending:
            raise ValueError(f"each batch on a stream needs a unique batch_id, got {batch_id!r}")
        future = asyncio.get_running_loop().create_future()
        self._pending[batch_id] = future
        request = self._request()
        getattr(request, member).CopyFrom(batch)
        try:
            async with self._writing:
                try:
                    await self._call.write(request)
                except (asyncio.InvalidStateError, grpc.aio.AioRpcError) as error:
                    # The call ended (its reader may not have noticed yet).
                    raise self._failure or ConnectionError(
                        f"the stream ended before batch {batch_id!r} was sent"
                    ) from error
            return await future
        finally:
            self._pending.pop(batch_id, None)

    async def _read(self) -> None:
        try:
            async for response in self._call:
                future = self._pending.get(response.batch_id)
                if future is not None and not future.done():
                    future.set_result(response)
                else:
                    logger.warning("stream reply for unknown batch %r", response.batch_id)
        except grpc.aio.AioRpcError as error:
            self._failure = error
        finally:
            failure = self._failure or ConnectionError("the stream ended before replying")
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(failure)
