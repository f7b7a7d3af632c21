"""Running handlers in worker processes (or any ``concurrent.futures.Executor``): the
parent's side (the workers' side is ``_worker``).

The parent pickles each offloaded handler once. A pool asyncpipe owns gives every handler
to each worker as it starts (``setup()`` runs there, once), and :meth:`WorkerPool.start`
waits until every worker is ready. Calls carry only a key and the data; a worker of
another executor that has not seen the key yet answers ``HandlerMissing``, and the call is
sent again with the pickled handler, which the worker loads, sets up and caches. So every
worker gets each handler once, whichever executor runs the calls (our own process pool, a
user's, or a Dask cluster's); the handler is torn down when the worker exits.

The runtime owns its :class:`~concurrent.futures.ProcessPoolExecutor`: when a worker dies
the pool breaks, every call in flight fails, and :class:`WorkerPool` replaces the pool.
Calls that saw a crash are retried one at a time, so a message that kills its worker every
time cannot take innocent ones down with it more than once.

Nodes see any of these through :class:`Pool`; :func:`make_pool` picks the implementation
for what a node (or the pipeline) was given: nothing (our process pool), a
``concurrent.futures.Executor``, or a Dask ``Client`` / :class:`asyncpipe.dask.DaskExecutor`
(``_dask``, imported only then).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import pickle
import queue
import sys
import uuid
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from . import _worker
from ._errors import HandlerSetupError, WorkerCrashed
from ._handler import Adapted, Rejection

__all__ = [
    "OffloadedHandler",
    "Pool",
    "PoolFactory",
    "WorkerPool",
    "is_offload_target",
    "make_pool",
]

logger = logging.getLogger(__name__)


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


class Pool(Protocol):
    """Where a run's offloaded nodes call their handlers."""

    #: Calls it runs at once (worker processes, or a cluster's worker threads once
    #: started); a node's default ``workers=`` is twice this.
    max_workers: int
    restarts: int  #: worker deaths seen (the metrics' ``worker_restarts``)

    def add(self, handler: OffloadedHandler) -> None:
        """Make ``handler`` known to the workers (before :meth:`start`)."""

    async def start(self) -> None:
        """Get ready: workers up and every handler set up (raise ``HandlerSetupError``)."""

    async def call(self, handler: OffloadedHandler, data: Any) -> tuple[Any, list[Rejection]]:
        """Run ``handler`` on ``data`` in a worker; return (result, rejections)."""

    def kill(self) -> None:
        """Give up on the calls in flight (abort)."""

    async def aclose(self) -> None:
        """Release everything (handlers torn down where the pool can)."""


@runtime_checkable
class PoolFactory(Protocol):
    """An ``executor=`` that makes its own kind of :class:`Pool` (e.g.
    :class:`asyncpipe.dask.DaskExecutor`): one pool per run."""

    def make_pool(self, *, max_workers: int) -> Pool:
        """A pool for one run; ``max_workers``: the pipeline's, a default for its size."""


def is_offload_target(executor: object) -> bool:
    """Whether ``executor`` can be given to ``executor=``."""
    return isinstance(executor, Executor | PoolFactory) or _dask_client(executor) is not None


def make_pool(
    executor: object,
    *,
    max_workers: int,
    mp_context: multiprocessing.context.BaseContext | None = None,
    crash_retries: int = 2,
) -> Pool:
    """The pool for ``executor=`` (None: a process pool of ``max_workers`` we own)."""
    client = _dask_client(executor)
    if client is not None:
        from .dask import DaskExecutor  # needs the dask extra, present since a Client exists

        executor = DaskExecutor(client)
    if isinstance(executor, PoolFactory):
        return executor.make_pool(max_workers=max_workers)
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError(
            f"executor= takes a concurrent.futures.Executor, a Dask Client or an "
            f"asyncpipe.dask.DaskExecutor, not {type(executor).__name__}"
        )
    size = getattr(executor, "_max_workers", None) or max_workers
    return WorkerPool(
        max_workers=size, executor=executor, mp_context=mp_context, crash_retries=crash_retries
    )


def _dask_client(executor: object) -> Any:
    """The Dask ``Client`` behind ``executor`` (itself, or ``client.get_executor()``'s),
    or None. Without distributed imported, nothing here is a Dask object."""
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return None
    if isinstance(executor, distributed.Client):
        return executor
    if isinstance(executor, distributed.cfexecutor.ClientExecutor):
        return executor._client
    return None


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
        self._handlers: dict[str, OffloadedHandler] = {}

    def add(self, handler: OffloadedHandler) -> None:
        """Have every worker of an owned pool load ``handler`` as it starts."""
        self._handlers[handler.key] = handler

    async def start(self) -> None:
        """Start an owned pool's workers and wait until each has loaded every handler
        (``setup()`` included), so the first calls find them warm.

        Raises :class:`HandlerSetupError` if a handler's ``setup()`` failed in a worker,
        and ``RuntimeError`` if workers exited because importing the main module started
        a pipeline (the ``__main__`` guard is missing). Returns early if a worker dies
        meanwhile (the first call then meets the broken
        pool and replaces it). Does nothing for an executor asyncpipe does not own.
        """
        if not self._owned or self._executor is not None:
            return
        ready = self._mp_context.Queue()
        try:
            executor = self._ensure(ready)
            processes = list((getattr(executor, "_processes", None) or {}).values())
            for _ in range(self.max_workers):
                failures = await self._next_ready(ready, processes)
                if failures is None:
                    _check_main_guard(processes)
                    return  # a worker died while starting
                for key, failure in failures.items():
                    raise HandlerSetupError(self._handlers[key].node, failure)
        finally:
            ready.close()
            ready.join_thread()

    @staticmethod
    async def _next_ready(ready: Any, processes: list[Any]) -> dict[str, str] | None:
        """The next worker's setup failures (by handler key), or None once a worker has
        died. The queue is read in a thread with a short timeout only so that a worker's
        death is noticed; a ready worker is seen at once."""
        while True:
            try:
                _, failures = await asyncio.to_thread(ready.get, True, 0.2)
            except queue.Empty:
                if any(p.exitcode is not None for p in processes):
                    return None
                continue
            failures_by_key: dict[str, str] = failures
            return failures_by_key

    def _ensure(self, ready: Any = None) -> Executor:
        if self._executor is None:
            handlers = tuple((key, h.blob) for key, h in self._handlers.items())
            pool = ProcessPoolExecutor(
                self.max_workers,
                mp_context=self._mp_context,
                initializer=_worker.init_worker,
                initargs=(os.getpid(), handlers, ready),
            )
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
            except _worker.SetupFailed as exc:
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
            except _worker.HandlerMissing:
                return await self._once(handler.key, handler.blob, data)

    async def _once(self, *args: Any) -> tuple[Any, list[Rejection]]:
        executor = self._ensure()
        generation = self._generation  # the pool this call really goes to
        try:
            future = executor.submit(_worker.call, *args)
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


def _check_main_guard(processes: list[Any]) -> None:
    """Raise the error that shows the ``__main__`` guard if a worker exited because
    importing the main module started a pipeline (``_worker.exit_if_importing_main``)."""
    if any(p.exitcode == _worker.UNGUARDED_MAIN_EXIT for p in processes):
        main = getattr(sys.modules.get("__main__"), "__file__", None) or "the main module"
        raise RuntimeError(
            f"worker processes import {main}, and importing it starts the pipeline again; "
            "put the pipeline under the main-module guard:\n\n"
            '    if __name__ == "__main__":\n'
            "        executor.start()\n"
        )


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
