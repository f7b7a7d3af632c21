"""Running handlers in worker processes (or any ``concurrent.futures.Executor``).

The parent pickles each offloaded handler once. Calls carry only a key and the data; a
worker that has not seen the key yet answers :class:`_HandlerMissing`, and the call is sent
again with the pickled handler, which the worker loads, runs ``setup()`` on once, caches,
and tears down when the worker exits. So every worker gets each handler once, whichever
executor runs the calls (our own process pool, a user's, or a Dask cluster's).

The runtime owns its :class:`~concurrent.futures.ProcessPoolExecutor`: when a worker dies
the pool breaks, every call in flight fails, and :class:`WorkerPool` replaces the pool.
Calls that saw a crash are retried one at a time, so a message that kills its worker every
time cannot take innocent ones down with it more than once.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import multiprocessing
import multiprocessing.util
import os
import pickle
import sys
import threading
import uuid
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from ._errors import HandlerSetupError, WorkerCrashed
from ._handler import Adapted, Kind, Rejection, adapt, collect_rejections

__all__ = ["OffloadedHandler", "WorkerPool"]

logger = logging.getLogger(__name__)


class _HandlerMissing(Exception):
    """Raised in a worker that has not loaded the handler yet."""


class _SetupFailed(Exception):
    """Raised in a worker whose copy of the handler failed its setup()."""


@dataclass(frozen=True, slots=True)
class OffloadedHandler:
    """A handler prepared for offloading: its key and its pickled form."""

    node: str
    key: str
    blob: bytes
    label: str

    @classmethod
    def prepare(cls, node: str, adapted: Adapted) -> OffloadedHandler:
        """Pickle the handler; raise TypeError naming the node if it cannot be pickled."""
        try:
            blob = pickle.dumps(adapted.obj, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(
                f"node {node!r}: handler {adapted.label} cannot be sent to worker processes "
                f"({type(exc).__name__}: {exc}); define it at module level and keep its "
                "attributes picklable, or drop cpu=True"
            ) from exc
        return cls(node, f"{node}-{uuid.uuid4().hex}", blob, adapted.label)


# -- worker side -------------------------------------------------------------------------

_loaded: dict[str, Adapted] = {}
_thread = threading.local()  # one event loop per worker thread, for async handlers


def _worker_call(key: str, blob: bytes | None, data: Any) -> tuple[Any, list[Rejection]]:
    """Run the handler ``key`` on ``data`` in this worker; return (result, rejections).

    Generator handlers are drained into a list. Runs in the worker process.
    """
    adapted = _loaded.get(key)
    if adapted is None:
        if blob is None:
            raise _HandlerMissing(key)
        adapted = _load(key, blob)
    return contextvars.copy_context().run(_invoke, adapted, data)


def _invoke(adapted: Adapted, data: Any) -> tuple[Any, list[Rejection]]:
    rejections = collect_rejections()
    result = adapted.call(data)
    if adapted.kind is Kind.ASYNC_GEN:
        result = _run(_drain(result))
    elif adapted.kind is Kind.SYNC_GEN:
        result = list(result)
    elif inspect.isawaitable(result):
        result = _run(result)
    return result, rejections


async def _drain(agen: Any) -> list[Any]:
    return [item async for item in agen]


def _run(awaitable: Any) -> Any:
    loop: asyncio.AbstractEventLoop | None = getattr(_thread, "loop", None)
    if loop is None:
        loop = _thread.loop = asyncio.new_event_loop()
    return loop.run_until_complete(awaitable)


def _load(key: str, blob: bytes) -> Adapted:
    obj = pickle.loads(blob)
    adapted = adapt(obj)
    setup = getattr(obj, "setup", None)
    if setup is not None:
        try:
            result = setup()
            if inspect.isawaitable(result):
                _run(result)
        except Exception as exc:
            raise _SetupFailed(f"setup() of {adapted.label} failed in a worker: {exc!r}") from exc
    if not _loaded:
        # Runs when the worker exits normally (pool shutdown), not on a crash.
        multiprocessing.util.Finalize(None, _teardown_all, exitpriority=10)
    _loaded[key] = adapted
    return adapted


def _teardown_all() -> None:
    for key, adapted in list(_loaded.items()):
        del _loaded[key]
        teardown = getattr(adapted.obj, "teardown", None)
        try:
            if teardown is not None:
                result = teardown()
                if inspect.isawaitable(result):
                    _run(result)
        except Exception:
            logger.exception("teardown of %s failed in worker", adapted.label)


# -- parent side -------------------------------------------------------------------------


def default_mp_context() -> multiprocessing.context.BaseContext:
    # Forking a process that runs an event loop, gRPC or SQLite threads is unsafe; forkserver
    # forks from a clean single-threaded server instead (and is 3.14's default on Linux).
    if sys.platform == "linux":
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")


class WorkerPool:
    """Runs offloaded handlers, owning (and replacing) a process pool unless given one."""

    def __init__(
        self,
        *,
        max_workers: int,
        executor: Executor | None = None,
        mp_context: multiprocessing.context.BaseContext | None = None,
        crash_retries: int = 2,
    ) -> None:
        self.max_workers = max_workers
        self.crash_retries = crash_retries
        self.restarts = 0
        self._owned = executor is None
        self._mp_context = mp_context or default_mp_context()
        self._executor: Executor | None = executor
        self._generation = 0
        # At most this many calls are queued in the executor at once: twice the workers,
        # so each worker has its next call ready while the previous result travels back.
        self._slots = asyncio.Semaphore(2 * max_workers)
        self._suspects = asyncio.Lock()
        self._retired: list[Any] = []  # worker processes of retired pools, to reap

    def _ensure(self) -> Executor:
        if self._executor is None:
            pool = ProcessPoolExecutor(self.max_workers, mp_context=self._mp_context)
            # Start every worker now: a 3.11 pool otherwise starts workers inside later
            # submit() calls, which can race its manager thread tearing a broken pool down
            # (a stranded worker, or "dictionary changed size" in that thread). The first
            # max_workers submits each start one worker; later ones start none.
            for _ in range(self.max_workers):
                pool.submit(os.getpid)
            self._executor = pool
        return self._executor

    async def call(self, handler: OffloadedHandler, data: Any) -> tuple[Any, list[Rejection]]:
        """Run ``handler`` on ``data`` in a worker; return (result, rejections).

        Raises what the handler raised, :class:`HandlerSetupError` if its ``setup()`` failed
        in the worker, or :class:`WorkerCrashed` if workers kept dying.
        """
        crashes = 0
        while True:
            try:
                if crashes:
                    async with self._suspects:
                        return await self._submit(handler, data)
                return await self._submit(handler, data)
            except _SetupFailed as exc:
                raise HandlerSetupError(handler.node, str(exc)) from exc
            except BrokenProcessPool as exc:
                crashes += 1
                if crashes > self.crash_retries or not self._owned:
                    raise WorkerCrashed(
                        handler.node,
                        f"worker process died running {handler.label} ({crashes} time(s)): {exc}",
                    ) from exc
                logger.warning(
                    "worker process died running %s; retrying (%d/%d)",
                    handler.label,
                    crashes,
                    self.crash_retries,
                )

    async def _submit(self, handler: OffloadedHandler, data: Any) -> tuple[Any, list[Rejection]]:
        async with self._slots:
            try:
                return await self._once(handler.key, None, data)
            except _HandlerMissing:
                return await self._once(handler.key, handler.blob, data)

    async def _once(self, *args: Any) -> tuple[Any, list[Rejection]]:
        executor = self._ensure()
        generation = self._generation  # the pool this call really goes to
        try:
            future = executor.submit(_worker_call, *args)
            result: tuple[Any, list[Rejection]] = await asyncio.wrap_future(future)
        except BrokenProcessPool:
            self._replace(generation)
            raise
        except OSError as exc:
            if not self._owned:
                raise
            # Our pool could not start a worker or take the call (e.g. it is breaking while
            # a worker spawns): a pool failure, not the handler's. Replace and retry.
            self._replace(generation)
            raise BrokenProcessPool(f"process pool failed: {exc!r}") from exc
        return result

    def _replace(self, generation: int) -> None:
        if not self._owned or generation != self._generation:
            return  # someone already replaced the pool broken under this generation
        self._generation += 1
        self.restarts += 1
        self._retire()
        logger.warning("process pool broken; replaced it (restart #%d)", self.restarts)

    def _retire(self, *, kill: bool = False) -> None:
        """Drop the current pool without waiting; keep its processes to reap later
        (``shutdown()`` forgets them)."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        processes = list((getattr(executor, "_processes", None) or {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        if kill:
            for process in processes:
                if process.is_alive():
                    process.kill()
        # Forget processes already gone (their pipes are closed when they are collected),
        # so restarts do not pile up file descriptors. Never close() them here: the broken
        # pool's manager thread may still be joining them.
        self._retired = [p for p in self._retired if p.exitcode is None] + processes

    def kill(self) -> None:
        """Kill an owned pool's worker processes now (jobs in flight are lost)."""
        if self._owned:
            self._retire(kill=True)

    async def aclose(self) -> None:
        """Shut an owned pool down without blocking the event loop (workers run teardown).

        :meth:`kill` still works while this waits.
        """
        if not self._owned:
            self._executor = None
            return
        executor = self._executor
        if executor is not None:
            self._retired.extend((getattr(executor, "_processes", None) or {}).values())
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
            if self._executor is executor:
                self._executor = None
        retired, self._retired = self._retired, []
        if retired:
            await asyncio.to_thread(_reap, retired)


def _reap(processes: list[Any]) -> None:
    """Kill worker processes left behind by broken pools.

    CPython 3.11's ProcessPoolExecutor can start a worker (in submit()) while its manager
    thread is already terminating a broken pool's workers; that worker never gets work nor a
    stop sentinel, and the interpreter would wait for it at exit.
    """
    for process in processes:
        if process.is_alive():
            process.kill()
        process.join(5)
