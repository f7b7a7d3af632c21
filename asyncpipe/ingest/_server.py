"""The ingestion server: gRPC batches pushed straight into a running pipeline.

It serves a service of the application's (a ``ServiceDescriptor``, see :mod:`._service`
for the shapes it takes) with one :class:`Route` per method. Each request is checked
(structure, then item by item with the route's converter), its valid items are
``submit()``-ed as one message into the route's producer node, and the reply is built from the
message's receipt: with ``ack="committed"`` (the default) the call is answered once every
item has reached its end -- committed by the sinks, filtered, or dead-lettered -- so
``success`` means the data is stored. ``ack="accepted"`` answers as soon as the batch is
in the pipeline's channel (faster, and a crash may lose it: the client cannot know).

Status codes:

* ``INVALID_ARGUMENT``: the batch as a whole is unacceptable (no ``batch_id`` or one longer
  than :data:`MAX_BATCH_ID_CHARS`, more items than ``max_batch_items``); nothing of it was
  taken. Invalid *items* are not errors: they are listed in the reply's ``rejections``
  (index + reason, cut short when long), dead-lettered, and the other items proceed.
* ``RESOURCE_EXHAUSTED``: the server is overloaded: the wait the batch would face
  (:mod:`._shedding`) exceeds what is left of the client's deadline, so it is refused at
  once; or the pipeline stayed saturated (``max_in_flight`` calls in flight, or its input
  channel full) until the deadline was about to pass. Nothing of the batch was taken,
  send it again later.
* ``DEADLINE_EXCEEDED`` (sent by the server just before the deadline): the batch was
  taken but is not done yet. It stays in the pipeline and is committed; sending it again
  with the same ``batch_id`` is harmless. The server never answers late.
* ``UNAVAILABLE``: the server is shutting down, or not serving yet (the pipeline is still
  starting; health says ``NOT_SERVING`` until it has), or the pipeline stopped before the
  batch was done; send it again (same ``batch_id``: sinks upsert, so a retry never
  duplicates).
* ``INVALID_ARGUMENT`` also answers a request that is not a valid protobuf message.
* ``UNIMPLEMENTED``: this server has no route for that method (or kind of batch).

On a stream RPC every request gets exactly one response with its
``batch_id``, in completion order; a per-batch problem is a response with ``success``
false and the status name at the start of ``message``, and the stream goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from .._errors import PipelineClosed
from .._executor import PipelineExecutor
from .._runner import install_signal_handlers
from .._tasks import first_done
from ._calls import CallTracker
from ._codec import MalformedLog, add_handlers
from ._intake import Ack, Intake
from ._routes import Route
from ._service import Service
from ._servicer import Servicer
from ._shedding import LoadEstimator
from ._stats import ServerMetrics, ServerStats

__all__ = ["IngestServer", "serve"]

logger = logging.getLogger(__name__)

_MiB = 1024 * 1024
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class IngestServer:
    """A ``grpc.aio`` server feeding ``executor``'s producer nodes; see the module docstring.

    ::

        server = IngestServer(
            executor,
            sensors_pb2.DESCRIPTOR.services_by_name["Sensors"],
            {"Record": Route("readings", items="readings", convert=reading_record)},
            port=50051,
        )

    Health says ``NOT_SERVING`` from :meth:`start` until the executor has started (its
    handlers set up, its worker processes warm), then ``SERVING`` (and :attr:`ready` is
    set): ``SERVING`` means a batch sent now is answered promptly.

    Args:
        executor: a running (or about to run) pipeline; the server never starts or stops it.
        service: the gRPC service to serve, from generated code
            (``my_pb2.DESCRIPTOR.services_by_name["MyService"]``).
        routes: unary method name -> :class:`Route` (a method without one answers
            ``UNIMPLEMENTED``); a stream method routes each batch as the unary method
            taking its type.
        host, port: where to listen; port 0 picks a free one (see :attr:`port`).
        ack: ``"committed"`` (reply once stored) or ``"accepted"`` (once in the channel).
        max_batch_items: larger batches are refused (``INVALID_ARGUMENT``).
        max_in_flight: calls (stream batches included) being handled at once; more wait.
        require_batch_id: refuse batches without a ``batch_id``.
        max_message_bytes: largest request or response accepted (default 16 MiB: a
            10,000-item batch is about 1 MiB).
        stream_window: batches one stream call handles at once.
        reuse_port: let several server processes share the port (``SO_REUSEPORT``);
            off by default, so a port already taken is an error rather than a silent
            second listener.
    """

    def __init__(
        self,
        executor: PipelineExecutor,
        service: ServiceDescriptor,
        routes: Mapping[str, Route],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ack: Ack = "committed",
        max_batch_items: int = 10_000,
        max_in_flight: int = 512,
        require_batch_id: bool = True,
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
        #: The service served, with its routes.
        self.service = Service(service, routes)
        for route in self.service.routes:
            if route.node not in executor.graph.nodes:
                raise ValueError(
                    f"IngestServer: {route.items} go to node {route.node!r}, which the "
                    f"pipeline does not have; nodes: {', '.join(executor.graph.order)}"
                )
        self.executor = executor
        self.host = host
        self.port = port
        self.ack = ack
        self.max_message_bytes = max_message_bytes
        self.stream_window = stream_window
        self.reuse_port = reuse_port
        #: Set once the executor has started and health says SERVING.
        self.ready = asyncio.Event()
        #: Set when a graceful stop begins: new batches are refused, streams stop reading.
        self.closing = asyncio.Event()
        #: When calls still in flight are cut off, once stopping (loop time; None: now).
        self.closing_deadline: float | None = None
        #: Calls being handled (a graceful stop waits for these, not for connections).
        self.calls = CallTracker()
        #: Clients that sent malformed requests (each logged once).
        self.malformed = MalformedLog()
        #: Batches answered per method and status, their latency, items (see metrics()).
        self.stats = ServerStats(self.service.methods)
        self._intake = Intake(
            executor,
            ack=ack,
            max_batch_items=max_batch_items,
            max_in_flight=max_in_flight,
            require_batch_id=require_batch_id,
            max_message_bytes=max_message_bytes,
            ready=self.ready,
            closing=self.closing,
        )
        #: Answers one batch (raises :class:`Refused` when it is refused as a whole).
        self.handle = self._intake.handle
        self._server: grpc.aio.Server | None = None
        self._health = HealthServicer()
        self._watcher: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<IngestServer {self.service_name} on {self.address} ack={self.ack}>"

    @property
    def service_name(self) -> str:
        """The full name of the service served (as health checks and reflection know it)."""
        return self.service.name

    @property
    def load(self) -> LoadEstimator:
        """The expected wait of a batch, from which overload is refused early."""
        return self._intake.load

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def metrics(self) -> ServerMetrics:
        """A snapshot of the batches answered per method and status, their latency and
        items, and the calls in flight (:mod:`asyncpipe.metrics` exposes it to Prometheus)."""
        return ServerMetrics.of(self)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> int:
        """Bind and start listening; returns the port (the one picked, for port 0).

        Health says ``NOT_SERVING`` until the executor has started, then ``SERVING``
        (:attr:`ready`); a batch arriving before waits for that within its deadline."""
        if self._server is not None:
            raise RuntimeError("IngestServer: already started")
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.max_message_bytes),
                ("grpc.max_send_message_length", self.max_message_bytes),
                ("grpc.so_reuseport", 1 if self.reuse_port else 0),
            ]
        )
        servicer = Servicer(self)
        add_handlers(
            server,
            self.service_name,
            {
                m.name: (servicer.behaviour(m), m.request, m.reply, m.streaming)
                for m in self.service.methods.values()
            },
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (
                self.service_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        bound = server.add_insecure_port(self.address)
        if bound == 0:
            raise OSError(f"IngestServer: cannot listen on {self.address}")
        self.port = bound
        for service in ("", self.service_name):
            await self._health.set(service, _NOT_SERVING)
        await server.start()
        self._server = server
        self._watcher = asyncio.create_task(
            self._serve_once_started(), name=f"asyncpipe:ingest:{self.port}:ready"
        )
        logger.info("ingestion server listening on %s (ack=%s)", self.address, self.ack)
        return self.port

    async def _serve_once_started(self) -> None:
        try:
            await self.executor.wait_started()
        except PipelineClosed:
            logger.warning("ingestion server %s: the pipeline closed unstarted", self.address)
            return
        if self.closing.is_set():
            return
        for service in ("", self.service_name):
            await self._health.set(service, _SERVING)
        self.ready.set()
        logger.info("ingestion server %s: serving", self.address)

    async def stop(self, grace: float | None = 30.0) -> None:
        """Stop gracefully: health says NOT_SERVING, new calls are refused, calls in flight
        are answered from their receipts (for up to ``grace`` seconds, then cancelled).

        Connections without a call in flight do not hold the stop (see :mod:`._calls`).
        The pipeline keeps running: stop it afterwards, so nothing answered is lost."""
        if self._server is None or self.closing.is_set():
            return
        if grace is not None and grace > 0:
            self.closing_deadline = asyncio.get_running_loop().time() + grace
        self.closing.set()
        if self._watcher is not None:
            self._watcher.cancel()
        await self._health.enter_graceful_shutdown()
        server = self._server
        logger.info("ingestion server %s: stopping (grace %ss)", self.address, grace)
        if grace is None or grace <= 0:
            await server.stop(grace)
        else:
            # Refuses new calls at once and gives those in flight up to the grace...
            graceful = asyncio.create_task(
                server.stop(grace), name=f"asyncpipe:ingest:{self.port}:stop"
            )
            try:
                async with asyncio.timeout(grace):
                    await self.calls.wait_idle()
                # ...but it would also wait out the grace for idle connections: once no
                # call of ours is in flight, end it now.
                await server.stop(0)
            finally:
                await graceful
        logger.info("ingestion server %s: stopped", self.address)

    async def wait_for_termination(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()

    async def __aenter__(self) -> IngestServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def serve(
    server: IngestServer,
    *,
    grace: float = 30.0,
    handle_signals: bool = True,
    on_ready: Callable[[IngestServer], object] | None = None,
) -> None:
    """Run ``server.executor`` and ``server`` until SIGINT/SIGTERM (or the pipeline ends).

    The server listens first, saying ``NOT_SERVING`` while the pipeline starts (handlers
    set up, worker processes warm); ``on_ready(server)`` is called once it is
    ``SERVING``. The first signal stops gracefully: the server refuses new calls and
    answers those in flight from their receipts, then the pipeline drains and its sinks
    commit. A second signal aborts.
    """
    executor = server.executor
    stop = asyncio.Event()
    remove = install_signal_handlers(stop.set, executor.abort) if handle_signals else None
    try:
        await server.start()
        try:
            async with executor:
                await first_done(server.ready.wait(), executor.wait_closed())
                if server.ready.is_set() and on_ready is not None:
                    on_ready(server)
                await first_done(stop.wait(), executor.wait_closed())
                await server.stop(grace)
        finally:
            await server.stop(0)  # if the pipeline failed: nothing to answer from
    finally:
        if remove is not None:
            remove()
