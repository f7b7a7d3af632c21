"""An async client of the ingestion service, for applications and the load test.

One ``grpc.aio`` channel is reused for every call. Each call has a deadline; a batch that
was not acknowledged -- the server was unavailable, saturated (``RESOURCE_EXHAUSTED``),
restarting, or the deadline passed -- is sent again with the *same* ``batch_id``, with
exponential backoff, up to ``retries`` times. Sinks upsert, so a batch stored before its
reply was lost is not duplicated by the retry::

    async with IngestClient("127.0.0.1:50051") as client:
        reply = await client.send_transactions([{"id": 1, "client_id": 7, ...}])
        assert reply.success, reply.message

A reply with ``success`` false (items failed inside the pipeline) is returned, not
retried: sending the same items again would fail the same way. Items that are invalid are
listed in ``reply.rejections``; they are not errors either.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .v1 import ingest_pb2 as pb
from .v1 import ingest_pb2_grpc as pb_grpc

__all__ = ["RETRYABLE", "IngestClient", "IngestStream"]

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

Batch = pb.ClientBatch | pb.TransactionBatch | pb.ScoreBatch
M = TypeVar("M", bound=Message)

B = TypeVar("B", pb.ClientBatch, pb.TransactionBatch, pb.ScoreBatch)

_KIND = {pb.ClientBatch: "clients", pb.TransactionBatch: "transactions", pb.ScoreBatch: "scores"}
#: The items of each kind of batch (in its repeated field named after the kind).
_ITEM_TYPE: dict[type[Any], type[Message]] = {
    pb.ClientBatch: pb.Client,
    pb.TransactionBatch: pb.Transaction,
    pb.ScoreBatch: pb.Score,
}


def _message(cls: type[M], item: M | Mapping[str, Any]) -> M:
    if isinstance(item, cls):
        return item
    if isinstance(item, Mapping):
        return cls(**{k: v for k, v in item.items() if v is not None})
    raise TypeError(f"expected a {cls.__name__} or a mapping, got {type(item).__name__}")


def new_batch_id() -> str:
    return uuid.uuid4().hex


def _batch(batch_type: type[B], items: Iterable[Any], batch_id: str | None) -> B:
    """A batch of ``batch_type`` with a fresh id (unless given) and the emission time."""
    item_type = _ITEM_TYPE[batch_type]
    batch = batch_type(batch_id=batch_id or new_batch_id())
    getattr(batch, _KIND[batch_type]).extend(_message(item_type, item) for item in items)
    batch.emitted_at.GetCurrentTime()
    return batch


def transaction_batch(
    items: Iterable[pb.Transaction | Mapping[str, Any]], batch_id: str | None = None
) -> pb.TransactionBatch:
    """A ``TransactionBatch`` of messages or mappings (a None value means "not set")."""
    return _batch(pb.TransactionBatch, items, batch_id)


def client_batch(
    items: Iterable[pb.Client | Mapping[str, Any]], batch_id: str | None = None
) -> pb.ClientBatch:
    """A ``ClientBatch`` of messages or mappings."""
    return _batch(pb.ClientBatch, items, batch_id)


def score_batch(
    items: Iterable[pb.Score | Mapping[str, Any]], batch_id: str | None = None
) -> pb.ScoreBatch:
    """A ``ScoreBatch`` of messages or mappings."""
    return _batch(pb.ScoreBatch, items, batch_id)


class IngestClient:
    """A connection to an ingestion server (see the module docstring).

    Args:
        target: ``host:port``.
        timeout: deadline of each attempt, in seconds.
        retries: attempts after the first for a batch that was not acknowledged.
        backoff, max_backoff: the first pause between attempts and its cap (doubling,
            with jitter).
        wait_for_ready: let a call wait (within its deadline) for the server to be
            reachable instead of failing at once, e.g. while it restarts.
    """

    def __init__(
        self,
        target: str,
        *,
        timeout: float = 10.0,
        retries: int = 5,
        backoff: float = 0.05,
        max_backoff: float = 2.0,
        wait_for_ready: bool = True,
        max_message_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.wait_for_ready = wait_for_ready
        self._channel = grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                # Reconnect quickly after a server restart (defaults: 1 s, up to 120 s).
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
            ],
        )
        self._stub = pb_grpc.IngestionServiceStub(self._channel)
        self._methods: dict[str, Any] = {
            "clients": self._stub.IngestClients,
            "transactions": self._stub.IngestTransactions,
            "scores": self._stub.IngestScores,
        }

    def __repr__(self) -> str:
        return f"<IngestClient {self.target}>"

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> IngestClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def send(self, batch: Batch, *, timeout: float | None = None) -> pb.IngestResponse:
        """Send one batch, retrying it (same ``batch_id``) until acknowledged.

        Raises ``grpc.aio.AioRpcError`` for a status that is not worth retrying
        (``INVALID_ARGUMENT``...) or once the retries are spent.
        """
        method = self._methods[_KIND[type(batch)]]
        attempt = 0
        while True:
            try:
                response: pb.IngestResponse = await method(
                    batch,
                    timeout=self.timeout if timeout is None else timeout,
                    wait_for_ready=self.wait_for_ready,
                )
                return response
            except grpc.aio.AioRpcError as error:
                if error.code() not in RETRYABLE or attempt >= self.retries:
                    raise
                pause = min(self.max_backoff, self.backoff * 2**attempt)
                attempt += 1
                logger.info(
                    "batch %s: %s (%s); attempt %d in %.2fs",
                    batch.batch_id,
                    error.code().name,
                    error.details(),
                    attempt + 1,
                    pause,
                )
                await asyncio.sleep(pause * random.uniform(0.5, 1.0))

    async def send_transactions(
        self,
        items: Iterable[pb.Transaction | Mapping[str, Any]],
        *,
        batch_id: str | None = None,
        timeout: float | None = None,
    ) -> pb.IngestResponse:
        return await self.send(transaction_batch(items, batch_id), timeout=timeout)

    async def send_clients(
        self,
        items: Iterable[pb.Client | Mapping[str, Any]],
        *,
        batch_id: str | None = None,
        timeout: float | None = None,
    ) -> pb.IngestResponse:
        return await self.send(client_batch(items, batch_id), timeout=timeout)

    async def send_scores(
        self,
        items: Iterable[pb.Score | Mapping[str, Any]],
        *,
        batch_id: str | None = None,
        timeout: float | None = None,
    ) -> pb.IngestResponse:
        return await self.send(score_batch(items, batch_id), timeout=timeout)

    def stream(self, *, timeout: float | None = None) -> IngestStream:
        """A bidirectional ``IngestStream`` call: ``async with client.stream() as s:
        reply = await s.send(batch)``; many sends may be in flight at once."""
        return IngestStream(self._stub, timeout=timeout)

    async def health(self, service: str = "", *, timeout: float = 5.0) -> str:
        """The server's health status name (``"SERVING"``, ``"NOT_SERVING"``...)."""
        stub: Any = health_pb2_grpc.HealthStub(self._channel)  # its stubs type a sync channel
        reply = await stub.Check(
            health_pb2.HealthCheckRequest(service=service),
            timeout=timeout,
            wait_for_ready=self.wait_for_ready,
        )
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


class IngestStream:
    """One ``IngestStream`` call; replies are matched to sends by ``batch_id``.

    Not retried as a whole: if the call fails, every pending ``send()`` raises the error
    and the caller sends those batches again (on a new stream or by unary calls).
    """

    def __init__(self, stub: pb_grpc.IngestionServiceStub, *, timeout: float | None) -> None:
        self._stub = stub
        self._timeout = timeout
        self._call: Any = None
        self._pending: dict[str, asyncio.Future[pb.IngestResponse]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._writing = asyncio.Lock()  # grpc.aio takes one write at a time

    async def __aenter__(self) -> IngestStream:
        self._call = self._stub.IngestStream(timeout=self._timeout)
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

    async def send(self, batch: Batch) -> pb.IngestResponse:
        """Send one batch on the stream and wait for its reply."""
        if self._failure is not None:
            raise self._failure
        batch_id = batch.batch_id
        if not batch_id or batch_id in self._pending:
            raise ValueError(f"each batch on a stream needs a unique batch_id, got {batch_id!r}")
        future = asyncio.get_running_loop().create_future()
        self._pending[batch_id] = future
        request = pb.IngestRequest()
        getattr(request, _KIND[type(batch)]).CopyFrom(batch)
        try:
            async with self._writing:
                try:
                    await self._call.write(request)
                except (asyncio.InvalidStateError, grpc.aio.AioRpcError) as error:
                    # The call ended (its reader may not have noticed yet).
                    raise self._failure or ConnectionError(
                        f"the stream ended before batch {batch_id!r} was sent"
                    ) from error
            response: pb.IngestResponse = await future
            return response
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
