"""The ingestion server: gRPC batches pushed straight into a running pipeline.

Each request is checked (structure, then item by item), its valid items are ``submit()``-ed
as one message into the producer node of its kind, and the reply is built from the
message's receipt: with ``ack="committed"`` (the default) the call is answered once every
item has reached its end -- committed by the sinks, filtered, or dead-lettered -- so
``success`` means the data is stored. ``ack="accepted"`` answers as soon as the batch is
in the pipeline's channel (faster, and a crash may lose it: the client cannot know).

Status codes:

* ``INVALID_ARGUMENT``: the batch as a whole is unacceptable (no ``batch_id`` or one longer
  than :data:`MAX_BATCH_ID_CHARS`, more items than ``max_batch_items``); nothing of it was
  taken. Invalid *items* are not errors: they are listed in the reply's ``rejections``
  (index + reason, cut short when long), dead-lettered, and the other items proceed.
* ``RESOURCE_EXHAUSTED``: the pipeline stayed saturated (``max_in_flight`` calls in
  flight, or its input channel full) until the client's deadline was about to pass;
  nothing of the batch was taken, send it again later.
* ``UNAVAILABLE``: the server is shutting down, or the pipeline stopped before the batch
  was done; send it again (same ``batch_id``: sinks upsert, so a retry never duplicates).
* ``UNIMPLEMENTED``: this server has no node for that kind of batch.

On the ``IngestStream`` RPC every request gets exactly one response with its
``batch_id``, in completion order; a per-batch problem is a response with ``success``
false and the status name at the start of ``message``, and the stream goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from .._deadletter import DeadLetter
from .._errors import PipelineAborted, PipelineClosed
from .._executor import PipelineExecutor
from .._receipt import Receipt
from .._runner import install_signal_handlers
from ._records import (
    DEFAULT_CURRENCIES,
    Converted,
    client_records,
    quoted,
    score_records,
    transaction_records,
)
from ._replies import item_text, pipeline_outcome, response
from .v1 import ingest_pb2 as pb
from .v1 import ingest_pb2_grpc as pb_grpc

__all__ = ["Ack", "IngestServer", "serve"]

logger = logging.getLogger(__name__)

Ack = Literal["committed", "accepted"]

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["IngestionService"].full_name
_MiB = 1024 * 1024
#: The longest batch_id taken (it is echoed in the reply and kept with dead letters).
MAX_BATCH_ID_CHARS = 128
_REPLY_MARGIN = 0.05  # seconds kept back from the client's deadline to send the reply


class _Refused(Exception):
    """A batch refused as a whole, with the gRPC status to answer."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class _Kind:
    name: str  # "clients", "transactions", "scores"
    node: str | None  # the producer node its records go to
    convert: Callable[[Iterable[Any]], Converted]


class IngestServer:
    """A ``grpc.aio`` server feeding ``executor``'s producer nodes; see the module docstring.

    Args:
        executor: a running (or about to run) pipeline; the server never starts or stops it.
        host, port: where to listen; port 0 picks a free one (see :attr:`port`).
        clients, transactions, scores: the producer node each kind of batch goes to
            (None: that RPC answers ``UNIMPLEMENTED``).
        ack: ``"committed"`` (reply once stored) or ``"accepted"`` (once in the channel).
        max_batch_items: larger batches are refused (``INVALID_ARGUMENT``).
        max_in_flight: calls (stream batches included) being handled at once; more wait.
        require_batch_id: refuse batches without a ``batch_id``.
        currencies: the currency codes a transaction may have.
        max_message_bytes: largest request or response accepted (default 16 MiB: a
            10,000-item batch is about 1 MiB).
        stream_window: batches one ``IngestStream`` call handles at once.
        reuse_port: let several server processes share the port (``SO_REUSEPORT``);
            off by default, so a port already taken is an error rather than a silent
            second listener.
    """

    def __init__(
        self,
        executor: PipelineExecutor,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clients: str | None = "clients",
        transactions: str | None = "transactions",
        scores: str | None = "scores",
        ack: Ack = "committed",
        max_batch_items: int = 10_000,
        max_in_flight: int = 512,
        require_batch_id: bool = True,
        currencies: Iterable[str] = DEFAULT_CURRENCIES,
        max_message_bytes: int = 16 * _MiB,
        stream_window: int = 64,
        reuse_port: bool = False,
    ) -> None:
        if ack not in ("committed", "accepted"):
            raise ValueError(f"ack must be 'committed' or 'accepted', got {ack!r}")
        for name, value in (
            ("max_batch_items", max_batch_items),
            ("max_in_flight", max_in_flight),
            ("stream_window", stream_window),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        known = frozenset(currencies)
        kinds = {
            "clients": _Kind("clients", clients, client_records),
            "transactions": _Kind(
                "transactions",
                transactions,
                lambda items: transaction_records(items, known),
            ),
            "scores": _Kind("scores", scores, score_records),
        }
        for kind in kinds.values():
            if kind.node is not None and kind.node not in executor.graph.nodes:
                raise ValueError(
                    f"IngestServer: {kind.name} go to node {kind.node!r}, which the "
                    f"pipeline does not have; nodes: {', '.join(executor.graph.order)}"
                )
        self.executor = executor
        self.host = host
        self.port = port
        self.ack = ack
        self.max_batch_items = max_batch_items
        self.require_batch_id = require_batch_id
        self.max_message_bytes = max_message_bytes
        self.stream_window = stream_window
        self.reuse_port = reuse_port
        self._kinds = kinds
        self._max_in_flight = max_in_flight
        self._slots: asyncio.Semaphore | None = None
        self._server: grpc.aio.Server | None = None
        self._health = HealthServicer()
        #: Set when a graceful stop begins: new batches are refused, streams stop reading.
        self.closing = asyncio.Event()

    def __repr__(self) -> str:
        return f"<IngestServer {self.address} ack={self.ack}>"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> int:
        """Bind and start serving; returns the port (the one picked, for port 0)."""
        if self._server is not None:
            raise RuntimeError("IngestServer: already started")
        self._slots = asyncio.Semaphore(self._max_in_flight)
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", self.max_message_bytes),
                ("grpc.so_reuseport", 1 if self.reuse_port else 0),
            ]
        )
        pb_grpc.add_IngestionServiceServicer_to_server(_Servicer(self), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        bound = server.add_insecure_port(self.address)
        if bound == 0:
            raise OSError(f"IngestServer: cannot listen on {self.address}")
        self.port = bound
        await server.start()
        self._server = server
        await self._health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        logger.info("ingestion server listening on %s (ack=%s)", self.address, self.ack)
        return self.port

    async def stop(self, grace: float | None = 30.0) -> None:
        """Stop gracefully: health says NOT_SERVING, new calls are refused, calls in flight
        are answered from their receipts (for up to ``grace`` seconds, then cancelled).

        The pipeline keeps running: stop it afterwards, so nothing answered is lost."""
        if self._server is None or self.closing.is_set():
            return
        self.closing.set()
        await self._health.enter_graceful_shutdown()
        logger.info("ingestion server %s: stopping (grace %ss)", self.address, grace)
        await self._server.stop(grace)
        logger.info("ingestion server %s: stopped", self.address)

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def __aenter__(self) -> IngestServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- handling one batch ----------------------------------------------------------------

    async def handle(
        self, kind_name: str, batch: Any, items: Any, time_remaining: float | None
    ) -> pb.IngestResponse:
        """Answer one batch (raises :class:`_Refused` when it is refused as a whole)."""
        started = time.perf_counter()
        kind = self._kinds[kind_name]
        if kind.node is None:
            raise _Refused(
                grpc.StatusCode.UNIMPLEMENTED, f"this server takes no {kind_name} batches"
            )
        batch_id: str = batch.batch_id
        received = len(items)
        if self.require_batch_id and not batch_id:
            raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, "batch_id is empty")
        if len(batch_id) > MAX_BATCH_ID_CHARS:
            raise _Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"batch_id {quoted(batch_id)} is too long: at most {MAX_BATCH_ID_CHARS} chars",
            )
        if received > self.max_batch_items:
            raise _Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"batch {quoted(batch_id)} has {received} {kind_name}; "
                f"the limit is {self.max_batch_items}",
            )
        if self.closing.is_set():
            raise _Refused(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
        deadline = None if time_remaining is None else time.monotonic() + time_remaining
        converted = kind.convert(items)
        receipt: Receipt | None = None
        if converted.records:
            receipt = await self._submit(kind.node, batch_id, converted.records, deadline)
        rejections = converted.rejections
        failure: str | None = None
        failed_items = 0
        try:
            # Only now that the batch is taken: a refused batch leaves no trace.
            if converted.rejections:
                await self._dead_letter_invalid(kind.node, batch_id, items, converted)
            if receipt is not None and self.ack == "committed":
                try:
                    await receipt
                except PipelineAborted:
                    raise _Refused(
                        grpc.StatusCode.UNAVAILABLE,
                        f"the pipeline stopped before batch {quoted(batch_id)} was stored; "
                        "send it again",
                    ) from None
                rejections, failure, failed_items = pipeline_outcome(receipt, converted, kind.node)
        finally:
            if receipt is not None:
                assert self._slots is not None
                self._slots.release()
        if failure is not None:
            message = f"{failed_items} item(s) failed in the pipeline: {failure}"
        elif self.ack == "accepted":
            message = "accepted into the pipeline (not yet stored)"
        else:
            message = "stored" if not rejections else "stored; rejections listed"
        rejected = min(received, len(rejections) + failed_items)
        reply = response(
            success=failure is None,
            message=message,
            batch_id=batch_id,
            received=received,
            rejected=rejected,
            rejections=rejections,
            budget=self.max_message_bytes // 2 - len(batch_id),
        )
        reply.processing_duration_seconds = time.perf_counter() - started
        return reply

    async def _submit(
        self, node: str, batch_id: str, records: list[dict[str, Any]], deadline: float | None
    ) -> Receipt:
        """Take a slot and put the records into ``node``'s channel before the client's
        ``deadline`` (``time.monotonic()``) is near.

        Returns holding the slot (the caller releases it once answered)."""
        slots = self._slots
        assert slots is not None
        budget = None if deadline is None else max(0.0, deadline - time.monotonic() - _REPLY_MARGIN)
        acquired = False
        try:
            async with asyncio.timeout(budget):
                await slots.acquire()
                acquired = True
                return await self.executor.submit(node, records)
        except TimeoutError:
            if acquired:
                slots.release()
            raise _Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the pipeline is saturated: batch {quoted(batch_id)} was not taken before the "
                f"deadline; send it again later",
            ) from None
        except PipelineClosed:
            if acquired:
                slots.release()
            raise _Refused(
                grpc.StatusCode.UNAVAILABLE, "the pipeline is not taking input (stopping)"
            ) from None
        except BaseException:
            if acquired:
                slots.release()
            raise

    async def _dead_letter_invalid(
        self, node: str, batch_id: str, items: Any, converted: Converted
    ) -> None:
        for index, reason in converted.rejections:
            await self.executor.write_dead_letter(
                DeadLetter(
                    node=node,
                    error_type="Rejected",
                    error_message=f"batch {quoted(batch_id)} item {index}: {reason}",
                    payload=item_text(items[index]),
                    index=index,
                )
            )


class _Servicer(pb_grpc.IngestionServiceServicer):
    def __init__(self, server: IngestServer) -> None:
        self._server = server

    async def _unary(self, kind: str, batch: Any, items: Any, context: Any) -> pb.IngestResponse:
        try:
            return await self._server.handle(kind, batch, items, context.time_remaining())
        except _Refused as refused:
            await context.abort(refused.code, refused.message)
            raise AssertionError("unreachable: abort() raises") from None

    async def IngestClients(
        self, request: pb.ClientBatch, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.IngestResponse:
        return await self._unary("clients", request, request.clients, context)

    async def IngestTransactions(
        self, request: pb.TransactionBatch, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.IngestResponse:
        return await self._unary("transactions", request, request.transactions, context)

    async def IngestScores(
        self, request: pb.ScoreBatch, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.IngestResponse:
        return await self._unary("scores", request, request.scores, context)

    async def IngestStream(
        self,
        request_iterator: AsyncIterator[pb.IngestRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        server = self._server
        window = asyncio.Semaphore(server.stream_window)
        write_lock = asyncio.Lock()
        answering: set[asyncio.Task[None]] = set()

        async def answer(request: pb.IngestRequest) -> None:
            try:
                response = await self._one_of_stream(request, context)
                async with write_lock:
                    await context.write(response)
            finally:
                window.release()

        requests = aiter(request_iterator)
        closing = asyncio.ensure_future(server.closing.wait())
        try:
            while True:
                # Stop reading when the server stops: the batches already read are
                # answered, the client sends the rest elsewhere (a stream would otherwise
                # hold a graceful stop for its whole grace period).
                following = asyncio.ensure_future(anext(requests))
                await asyncio.wait([following, closing], return_when=asyncio.FIRST_COMPLETED)
                if not following.done():
                    following.cancel()
                    break
                try:
                    request = following.result()
                except StopAsyncIteration:
                    break
                await window.acquire()
                task = asyncio.create_task(answer(request))
                answering.add(task)
                task.add_done_callback(answering.discard)
            while answering:
                done, _ = await asyncio.wait(answering, return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()  # a failed write ends the call
        finally:
            closing.cancel()
            for task in answering:
                task.cancel()

    async def _one_of_stream(
        self, request: pb.IngestRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.IngestResponse:
        which = request.WhichOneof("batch")
        if which is None:
            return pb.IngestResponse(
                success=False, message="INVALID_ARGUMENT: the request holds no batch"
            )
        batch = getattr(request, which)
        try:
            return await self._server.handle(
                which, batch, getattr(batch, which), context.time_remaining()
            )
        except _Refused as refused:
            return pb.IngestResponse(
                success=False,
                batch_id=batch.batch_id,
                items_received=len(getattr(batch, which)),
                message=f"{refused.code.name}: {refused.message}",
            )


async def serve(
    server: IngestServer,
    *,
    grace: float = 30.0,
    handle_signals: bool = True,
    on_ready: Callable[[IngestServer], object] | None = None,
) -> None:
    """Run ``server.executor`` and ``server`` until SIGINT/SIGTERM (or the pipeline ends).

    The first signal stops gracefully: the server refuses new calls and answers those in
    flight from their receipts, then the pipeline drains and its sinks commit. A second
    signal aborts. ``on_ready(server)`` is called once the server listens.
    """
    executor = server.executor
    stop = asyncio.Event()
    remove = install_signal_handlers(stop.set, executor.abort) if handle_signals else None
    try:
        async with executor:
            await server.start()
            if on_ready is not None:
                on_ready(server)
            waits = [
                asyncio.ensure_future(stop.wait()),
                asyncio.ensure_future(executor.wait_closed()),
            ]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
            await server.stop(grace)
    finally:
        if remove is not None:
            remove()
