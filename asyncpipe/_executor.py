"""PipelineExecutor: runs a validated graph of nodes on one event loop.

Lifecycle: created -> running -> stopping -> closed. An executor runs once.

* ``await run()``: until every source is exhausted and everything drained. A pipeline
  without sources is fed by ``submit()`` and runs until ``stop()`` (or ``idle_timeout``).
* ``async with executor:``: runs in the background while the body ``submit()``s; leaving
  the block drains (or aborts, if the body raised).
* ``start()``: the seed's synchronous entry point: ``run()`` in a new loop (uvloop when
  installed), with SIGINT/SIGTERM handled (first: drain, second: abort).

Graceful stop is an ordered drain: stop intake (sources stop pulling, ``submit()`` refused)
-> end-of-stream flows down the channels -> sinks finish -> teardowns -> the process pool
shuts down off the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import Executor
from types import TracebackType
from typing import Any

from ._channel import Channel
from ._deadletter import DeadLetter, DeadLetterSink, MemoryDeadLetterSink
from ._errors import (
    AsyncpipeError,
    ChannelClosed,
    HandlerSetupError,
    PipelineAborted,
    PipelineClosed,
)
from ._graph import Graph, HandlerNode, default_pool_size
from ._handler import _call_hook
from ._metrics import NodeMetrics, PipelineMetrics
from ._node import Envelope, NodeRuntime
from ._offload import WorkerPool
from ._receipt import Receipt
from ._runner import install_signal_handlers, run
from ._tasks import gather_or_first_error

__all__ = ["ExecutorState", "PipelineExecutor"]

logger = logging.getLogger(__name__)

_CLEANUP_TIMEOUT = 30.0  # seconds any one teardown may take


class ExecutorState(enum.StrEnum):
    CREATED = "created"
    RUNNING = "running"
    STOPPING = "stopping"
    CLOSED = "closed"


class PipelineExecutor:
    """Runs a pipeline: producers (sources, or nodes fed by ``submit()``) and consumers.

    Args:
        producer_nodes: nodes without dependencies.
        consumer_nodes: every other node.
        idle_timeout: stop by itself after this many seconds without any message being
            submitted or processed (the seed's continuous mode).
        max_workers: size of the process pool for ``cpu=True`` nodes (default: CPU count).
        executor: a ``concurrent.futures.Executor`` for ``cpu=True`` nodes instead of the
            pool asyncpipe owns (it is not shut down or replaced by asyncpipe).
        dead_letter_sink: where dead letters go (default: an in-memory list,
            :attr:`dead_letters`). If it has ``open()`` / ``aclose()`` coroutines, they are
            called before the run and after it (both should be idempotent).
        crash_retries: times a message is retried after its worker process died.
        mp_context: multiprocessing context of the owned pool (default: forkserver on Linux).

    Raises :class:`GraphError` (and ``TypeError`` for handlers of ``cpu=True`` nodes that
    cannot be pickled) before anything runs.
    """

    def __init__(
        self,
        producer_nodes: Sequence[HandlerNode] = (),
        consumer_nodes: Sequence[HandlerNode] = (),
        *,
        idle_timeout: float | None = None,
        max_workers: int | None = None,
        executor: Executor | None = None,
        dead_letter_sink: DeadLetterSink | None = None,
        crash_retries: int = 2,
        mp_context: Any = None,
    ) -> None:
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError(f"idle_timeout must be > 0, got {idle_timeout}")
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.graph = Graph(producer_nodes, consumer_nodes)
        self.idle_timeout = idle_timeout
        self.dead_letter_sink: DeadLetterSink = dead_letter_sink or MemoryDeadLetterSink()
        self.max_workers = max_workers or default_pool_size()
        self._executor = executor
        self._crash_retries = crash_retries
        self._mp_context = mp_context
        self._state = ExecutorState.CREATED
        self._runtimes: dict[str, NodeRuntime] = {}
        self._pools: list[WorkerPool] = []
        self._receipts: weakref.WeakSet[Receipt] = weakref.WeakSet()
        self._intake_open = False
        # asyncio.Event binds to a loop only when first waited on, so these can be made here.
        self._stop_requested = asyncio.Event()
        self._started = asyncio.Event()
        self._closed = asyncio.Event()
        self._run_task: asyncio.Task[None] | None = None
        self._abort_requested = False
        self._cleaning = False
        self._set_up: list[tuple[str, Any]] = []
        self._teardowns_skipped = False
        self._teardown_timeout: asyncio.Timeout | None = None
        self._started_at: float | None = None
        self._build_runtimes()  # pickles cpu handlers now, so a bad one fails here

    def __repr__(self) -> str:
        return f"<PipelineExecutor {self._state} nodes={list(self.graph.nodes)}>"

    @property
    def state(self) -> ExecutorState:
        return self._state

    @property
    def dead_letters(self) -> list[DeadLetter]:
        """Dead letters kept by the default in-memory sink (empty for other sinks)."""
        sink = self.dead_letter_sink
        return sink.letters if isinstance(sink, MemoryDeadLetterSink) else []

    # -- building --------------------------------------------------------------------------

    def _build_runtimes(self) -> None:
        graph = self.graph
        inboxes: dict[str, Channel[Envelope]] = {
            name: Channel(node.capacity, name)
            for name, node in graph.nodes.items()
            if not node.is_source
        }
        shared_pool: WorkerPool | None = None
        own_pools: dict[int, WorkerPool] = {}
        for name in graph.order:
            node = graph.nodes[name]
            pool = None
            if node.executor is not None:
                pool = own_pools.get(id(node.executor))
                if pool is None:
                    pool = own_pools[id(node.executor)] = self._pool(node.executor)
            elif node.cpu:
                if shared_pool is None:
                    shared_pool = self._pool(self._executor)
                pool = shared_pool
            self._runtimes[name] = NodeRuntime(
                node,
                inbox=inboxes.get(name),
                outputs=[inboxes[dep] for dep in graph.dependents[name]],
                workers=node.resolved_workers(pool.max_workers if pool else 1),
                pool=pool,
                dead_letter=self._write_dead_letter,
                track=self._receipts.add,
            )

    def _pool(self, executor: Executor | None) -> WorkerPool:
        workers = getattr(executor, "_max_workers", None) or self.max_workers
        pool = WorkerPool(
            max_workers=workers,
            executor=executor,
            mp_context=self._mp_context,
            crash_retries=self._crash_retries,
        )
        self._pools.append(pool)
        return pool

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until every source is exhausted and every channel drained.

        Without sources, runs until :meth:`stop` (or ``idle_timeout``). Raises
        :class:`HandlerError` when a fail-fast node fails and :class:`PipelineAborted` after
        :meth:`abort`.
        """
        await self._run(handle_signals=False)

    async def _run(self, *, handle_signals: bool) -> None:
        self._enter()
        self._run_task = asyncio.current_task()
        await self._execute(close_when_sources_done=True, handle_signals=handle_signals)

    def start(self, *, use_uvloop: bool = True, handle_signals: bool = True) -> None:
        """Synchronous convenience: ``run()`` in a new event loop (uvloop when installed).

        With ``handle_signals``, the first SIGINT/SIGTERM drains and the second aborts.
        """
        run(self._run(handle_signals=handle_signals), use_uvloop=use_uvloop)

    async def __aenter__(self) -> PipelineExecutor:
        self._enter()
        run_task = self._run_task = asyncio.create_task(
            self._execute(close_when_sources_done=False), name="asyncpipe:executor"
        )
        started = asyncio.create_task(self._started.wait())
        try:
            await asyncio.wait([started, run_task], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled while starting: take the pipeline down with us
            started.cancel()
            self.abort()
            with contextlib.suppress(BaseException):
                await run_task
            raise
        if not started.done():
            started.cancel()
            await run_task  # it ended before starting: raise why
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._run_task is not None
        if exc is None:
            self.stop()
        else:
            self.abort()
        try:
            await self._run_task
        except PipelineAborted:
            if exc is None:
                raise
        except BaseException as run_error:
            if exc is not None and not isinstance(exc, Exception):
                # The body was cancelled (or interrupted): that must propagate, not the
                # pipeline's own earlier failure.
                logger.error("pipeline had failed: %r", run_error)
                return
            raise

    async def aclose(self) -> None:
        """Stop gracefully and wait until drained and closed (idempotent)."""
        if self._state is ExecutorState.CREATED:
            return
        self.stop()
        if self._run_task is not asyncio.current_task():
            await self._closed.wait()

    async def wait_started(self) -> None:
        """Wait until a ``run()`` started elsewhere accepts ``submit()``.

        Raises :class:`PipelineClosed` if the pipeline closed (or failed) without starting.
        """
        started = asyncio.ensure_future(self._started.wait())
        closed = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait([started, closed], return_when=asyncio.FIRST_COMPLETED)
        finally:
            started.cancel()
            closed.cancel()
        if not self._intake_open:
            raise self._closed_error()

    async def wait_closed(self) -> None:
        """Wait until the pipeline has closed (drained, stopped, aborted or failed)."""
        await self._closed.wait()

    def stop(self) -> None:
        """Stop intake and let everything in flight drain (returns at once; not awaited).

        Called before the run has started, the run starts stopped: it drains at once.
        """
        if self._state is ExecutorState.CREATED:
            self._stop_requested.set()  # kept for the run about to start
        elif self._state is ExecutorState.RUNNING:
            self._state = ExecutorState.STOPPING
            self._intake_open = False  # refuse submit() from now on
            self._stop_requested.set()

    def abort(self) -> None:
        """Cancel everything now; outstanding receipts fail with PipelineAborted and
        worker processes are killed. Does nothing once the pipeline is closed; called
        before the run has started, the run raises PipelineAborted at once."""
        if self._state is ExecutorState.CREATED:
            self._abort_requested = True  # kept for the run about to start
            return
        if self._state is ExecutorState.CLOSED:
            return
        if self._cleaning:
            # Already past the drain: cut the teardowns short and kill the workers.
            self._teardowns_skipped = True
            if self._teardown_timeout is not None:
                self._teardown_timeout.reschedule(asyncio.get_running_loop().time())
            for pool in self._pools:
                pool.kill()
            return
        if self._run_task is not None and not self._abort_requested:
            self._abort_requested = True
            self._run_task.cancel()

    def _enter(self) -> None:
        if self._state is not ExecutorState.CREATED:
            raise RuntimeError(
                f"this PipelineExecutor is {self._state}; an executor runs once, "
                "create a new one to run the pipeline again"
            )
        self._state = (
            ExecutorState.STOPPING if self._stop_requested.is_set() else ExecutorState.RUNNING
        )

    async def _execute(
        self, *, close_when_sources_done: bool, handle_signals: bool = False
    ) -> None:
        self._started_at = time.monotonic()
        remove_signals = install_signal_handlers(self.stop, self.abort) if handle_signals else None
        drained = False
        try:
            if self._abort_requested:
                raise PipelineAborted("pipeline aborted before it started")
            await self._open_dead_letter_sink()
            await self._setup_handlers()
            for name, runtime in self._runtimes.items():
                if runtime.inbox is not None:
                    runtime.inbox.add_sender()  # the intake: submit()
                    for _ in self.graph.inputs[name]:
                        runtime.inbox.add_sender()
            async with asyncio.TaskGroup() as group:
                # Sources start first: in that scheduling order channels stay shallower
                # (measured: ~7% more throughput on a batched chain).
                sources = [
                    group.create_task(rt.feed(rt.node.source), name=f"asyncpipe:{name}")
                    for name, rt in self._runtimes.items()
                    if rt.node.source is not None
                ]
                node_tasks = [
                    group.create_task(rt.run(), name=f"asyncpipe:{name}")
                    for name, rt in self._runtimes.items()
                    if rt.inbox is not None
                ]
                self._intake_open = self._state is ExecutorState.RUNNING
                self._started.set()
                logger.info("pipeline started: %s", ", ".join(self.graph.order))
                watchdog = (
                    group.create_task(self._watch_idle(), name="asyncpipe:idle-watchdog")
                    if self.idle_timeout
                    else None
                )
                await self._until_intake_ends(sources, close_when_sources_done)
                self._close_intake()
                if node_tasks:
                    await asyncio.wait(node_tasks)
                if watchdog is not None:
                    watchdog.cancel()
            drained = True
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._abort_requested and task is not None and task.uncancel() == 0:
                raise PipelineAborted("pipeline aborted") from None
            raise
        except BaseExceptionGroup as group_error:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # Cancelled (or aborted) while some node failed on its way down, e.g. its
                # output channel was torn down under it: the cancellation is what happened.
                if self._abort_requested and task.uncancel() == 0:
                    raise PipelineAborted("pipeline aborted") from None
                raise asyncio.CancelledError from None
            # The leaf keeps its own __cause__ (e.g. the handler's exception).
            raise _unwrap(group_error)  # noqa: B904
        finally:
            self._intake_open = False
            self._state = ExecutorState.STOPPING
            self._cleaning = True
            for runtime in self._runtimes.values():
                if runtime.inbox is not None:
                    runtime.inbox.abort()
            for receipt in list(self._receipts):
                receipt.abort("the pipeline stopped before this message was done")
            try:
                await self._cleanup_to_the_end(graceful=drained)
            finally:
                if remove_signals is not None:
                    remove_signals()
                self._state = ExecutorState.CLOSED
                self._closed.set()
                logger.info("pipeline closed")

    async def _until_intake_ends(
        self, sources: list[asyncio.Task[None]], close_when_sources_done: bool
    ) -> None:
        stop = asyncio.ensure_future(self._stop_requested.wait())
        try:
            if not (close_when_sources_done and sources):
                await stop
                return
            pending: set[asyncio.Future[Any]] = set(sources)
            while pending and not stop.done():
                _, pending = await asyncio.wait(
                    pending | {stop}, return_when=asyncio.FIRST_COMPLETED
                )
                pending.discard(stop)
        finally:
            stop.cancel()

    def _close_intake(self) -> None:
        self._intake_open = False
        for runtime in self._runtimes.values():
            if runtime.inbox is not None:
                runtime.inbox.close_sender()
            else:
                runtime.stop_source()

    async def _watch_idle(self) -> None:
        assert self.idle_timeout is not None
        last_activity = time.monotonic()  # idle time counts from intake opening
        while True:
            activity = self._activity()
            await asyncio.sleep(max(0.0, last_activity + self.idle_timeout - time.monotonic()))
            if self._activity() != activity or self._busy():
                last_activity = time.monotonic()
                continue
            if time.monotonic() - last_activity >= self.idle_timeout:
                logger.info("pipeline idle for %.1fs: stopping", self.idle_timeout)
                self.stop()
                return

    def _activity(self) -> int:
        return sum(rt.stats.received for rt in self._runtimes.values())

    def _busy(self) -> bool:
        return any(
            rt.stats.busy or (rt.inbox is not None and len(rt.inbox))
            for rt in self._runtimes.values()
        )

    def _on_loop_handlers(self) -> list[tuple[str, Any]]:
        """(node, handler object) for handlers whose hooks run on the event loop (cpu=True
        handlers are set up and torn down in each worker instead)."""
        return [
            (name, rt.node.handler.obj)
            for name, rt in self._runtimes.items()
            if rt.node.handler is not None and not rt.node.cpu
        ]

    async def _setup_handlers(self) -> None:
        async def setup(name: str, handler: Any) -> None:
            try:
                await _call_hook(handler, "setup")
            except Exception as exc:
                raise HandlerSetupError(name, f"setup() failed: {exc!r}") from exc
            self._set_up.append((name, handler))

        # Worker processes start, and set up their handlers, while the loop's handlers do.
        await gather_or_first_error(
            [setup(name, handler) for name, handler in self._on_loop_handlers()]
            + [pool.start() for pool in self._pools],
            "asyncpipe:setup",
        )

    async def _cleanup_to_the_end(self, *, graceful: bool) -> None:
        """Run :meth:`_cleanup` to its end even if this task is cancelled again meanwhile
        (each teardown has its own deadline, and abort() cuts them short); then let that
        cancellation through."""
        cleanup = asyncio.create_task(self._cleanup(graceful=graceful), name="asyncpipe:cleanup")
        cancelled = False
        while True:
            try:
                await asyncio.shield(cleanup)
            except asyncio.CancelledError:
                if cleanup.cancelled():
                    raise
                if not cleanup.done():
                    cancelled = True
                    continue
            break
        if cancelled:
            raise asyncio.CancelledError
        cleanup.result()

    async def _cleanup(self, *, graceful: bool) -> None:
        if not graceful:
            for pool in self._pools:
                pool.kill()  # aborted or failed: don't wait for running jobs
        # Only handlers whose setup() completed are torn down, in reverse order.
        while self._set_up and not self._teardowns_skipped:
            name, handler = self._set_up.pop()
            try:
                async with asyncio.timeout(_CLEANUP_TIMEOUT) as self._teardown_timeout:
                    await _call_hook(handler, "teardown")
            except Exception:
                logger.exception("node %r: teardown() failed or was cut short", name)
            finally:
                self._teardown_timeout = None
        for pool in self._pools:
            await pool.aclose()
        await self._close_dead_letter_sink()

    async def _open_dead_letter_sink(self) -> None:
        try:
            await _call_hook(self.dead_letter_sink, "open")
        except Exception as exc:
            sink = self.dead_letter_sink
            raise AsyncpipeError(f"dead-letter sink {sink!r} failed to open: {exc!r}") from exc

    async def _close_dead_letter_sink(self) -> None:
        try:
            async with asyncio.timeout(_CLEANUP_TIMEOUT):
                await _call_hook(self.dead_letter_sink, "aclose")
        except Exception:
            logger.exception("dead-letter sink %r failed to close", self.dead_letter_sink)

    # -- intake ----------------------------------------------------------------------------

    async def submit(self, node: str, message: Any, *, origin: str | None = None) -> Receipt:
        """Put ``message`` into ``node``'s input (waiting while it is full) and return its
        receipt; ``await receipt`` resolves once everything derived from it is done.

        ``origin`` identifies the message stably across resends (e.g. a client's batch id):
        its dead letters carry it, and dead-letter sinks keep one letter per
        (node, origin, index), so a batch sent again is not dead-lettered again.

        Raises :class:`PipelineClosed` if the pipeline is not accepting input and
        ``KeyError`` for an unknown node. Cancelling while waiting enqueues nothing.
        """
        runtime = self._runtimes.get(node)
        if runtime is None:
            raise KeyError(f"no node named {node!r}; nodes: {', '.join(self.graph.order)}")
        if runtime.inbox is None:
            raise ValueError(f"node {node!r} is a source; submit to a node that has an input")
        if not self._intake_open:
            raise self._closed_error()
        receipt = Receipt(node, asyncio.get_running_loop(), origin=origin)
        try:
            await runtime.inbox.put((message, receipt))
        except ChannelClosed:
            raise self._closed_error() from None
        self._receipts.add(receipt)
        return receipt

    async def write_dead_letter(self, letter: DeadLetter) -> None:
        """Record a dead letter made outside the nodes, e.g. an item refused at the intake
        (``letter.node`` should name the node it was meant for)."""
        runtime = self._runtimes.get(letter.node)
        if runtime is not None:
            runtime.stats.dead_letters += 1
        await self._write_dead_letter(letter, None)

    def _closed_error(self) -> PipelineClosed:
        return PipelineClosed(f"pipeline is {self._state}: not accepting input")

    async def _write_dead_letter(self, letter: DeadLetter, receipt: Receipt | None) -> None:
        if receipt is not None:
            receipt.dead_letters.append(letter)
        try:
            await self.dead_letter_sink.write(letter)
        except Exception:
            logger.exception(
                "node %r: dead-letter sink failed; letter: %s: %s payload=%.200r",
                letter.node,
                letter.error_type,
                letter.error_message,
                letter.payload,
            )

    # -- observing -------------------------------------------------------------------------

    def metrics(self) -> PipelineMetrics:
        """A snapshot of every node's counters, latencies and queue."""
        nodes = {}
        for name in self.graph.order:
            rt = self._runtimes[name]
            stats = rt.inbox.statistics() if rt.inbox is not None else None
            nodes[name] = NodeMetrics.of(
                name,
                rt.stats,
                workers=rt.workers,
                depth=stats.depth if stats else 0,
                capacity=stats.capacity if stats else 0,
                high_water=stats.high_water if stats else 0,
            )
        started = self._started_at
        return PipelineMetrics(
            state=str(self._state),
            nodes=nodes,
            worker_restarts=sum(pool.restarts for pool in self._pools),
            uptime=0.0 if started is None else time.monotonic() - started,
        )

    def to_mermaid(self) -> str:
        """The pipeline's DAG as a Mermaid flowchart."""
        return self.graph.to_mermaid()


def _unwrap(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first asyncpipe error in a (nested) exception group, else the group itself."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            inner = _unwrap(exc)
            if inner is not exc:
                return inner
        elif isinstance(exc, AsyncpipeError):
            return exc
    only: BaseException = group.exceptions[0]
    if len(group.exceptions) == 1 and not isinstance(only, BaseExceptionGroup):
        return only
    return group
