"""The worker-process side of offloading: loading handlers, calling them, dying with the parent.

Everything here runs in a worker process. A pool asyncpipe owns starts each worker with
:func:`init_worker`, which

* ignores SIGINT: a terminal's Ctrl-C signals the whole process group, and what it means
  (drain, then exit) is the parent's decision, not a ``KeyboardInterrupt`` in a job;
* makes the worker exit when the parent process dies, even by SIGKILL (workers of the
  forkserver are not the parent's children, so the kernel's parent-death signal cannot
  do it): a thread waits on a pidfd of the parent (polls it where pidfds do not exist);
* loads every offloaded handler of the pool and runs its ``setup()`` before the worker
  takes its first job, then reports ready, so a pipeline is warm when it says it started.

A worker starts (spawn, forkserver) by importing the parent's main module. A script
without ``if __name__ == "__main__":`` would start its pipeline again there, and that
pipeline its own workers: :func:`exit_if_importing_main` makes such a worker exit at once
with :data:`UNGUARDED_MAIN_EXIT`, which the parent's pool turns into one error that shows
the guard.

Workers of an executor asyncpipe does not own (a user's pool) get a handler at their
first call for it instead (:class:`HandlerMissing`, then the call again with the pickled
handler). Dask workers get it from a worker plugin (``_dask``): :func:`install` when the
node starts (and on every worker that joins later), :func:`uninstall` when it ends.
Loading is idempotent and thread-safe, so a worker with several threads sets a handler up
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import multiprocessing.util
import os
import pickle
import select
import signal
import threading
from typing import Any

from ._handler import Adapted, Kind, Rejection, adapt, collect_rejections

__all__ = [
    "UNGUARDED_MAIN_EXIT",
    "HandlerMissing",
    "SetupFailed",
    "call",
    "exit_if_importing_main",
    "init_worker",
    "install",
    "uninstall",
]

logger = logging.getLogger(__name__)

_loaded: dict[str, Adapted] = {}
_failed: dict[str, str] = {}  # handler key -> why its setup() failed in this worker
_thread = threading.local()  # one event loop per worker thread, for async handlers
_loading = threading.Lock()  # one thread at a time loads (or unloads) handlers
_finalizing = False  # whether _teardown_all will run at exit


#: Exit code of a worker process that was importing the main module when that module
#: started a pipeline (a script without ``if __name__ == "__main__":``).
UNGUARDED_MAIN_EXIT = 86


def exit_if_importing_main() -> None:
    """Exit this process at once (:data:`UNGUARDED_MAIN_EXIT`) if it is a child process
    that multiprocessing is preparing by importing the parent's main module: a pipeline
    started now is the parent's script run again. Quietly, since every worker would
    say it; the parent explains, once (``WorkerPool.start``)."""
    # multiprocessing sets this flag while a child (or the forkserver) imports the main
    # module; its own check for the same mistake (spawn._check_not_importing_main) reads it.
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        logger.debug("a pipeline started while importing the main module: exiting")
        os._exit(UNGUARDED_MAIN_EXIT)


class HandlerMissing(Exception):
    """Raised in a worker that has not loaded the handler yet."""


class SetupFailed(Exception):
    """Raised in a worker whose copy of the handler failed its setup()."""


def init_worker(parent: int, handlers: tuple[tuple[str, bytes], ...], ready: Any) -> None:
    """Initializer of the worker processes of a pool asyncpipe owns (see the module doc).

    ``ready`` (a multiprocessing queue, or None) receives ``(pid, {key: failure})`` once
    every handler is loaded.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with(parent)
    for key, blob in handlers:
        with contextlib.suppress(SetupFailed):  # remembered in _failed, reported below
            install(key, blob)
    if ready is not None:
        ready.put((os.getpid(), dict(_failed)))


def call(key: str, blob: bytes | None, data: Any) -> tuple[Any, list[Rejection]]:
    """Run the handler ``key`` on ``data`` in this worker; return (result, rejections).

    Generator handlers are drained into a list.
    """
    adapted = _loaded.get(key)
    if adapted is None:
        failure = _failed.get(key)
        if failure is not None:
            raise SetupFailed(failure)
        if blob is None:
            raise HandlerMissing(key)
        adapted = _load(key, blob)
    return contextvars.copy_context().run(_invoke, adapted, data)


def install(key: str, blob: bytes) -> None:
    """Load the handler ``key`` into this worker and run its ``setup()``, unless already
    done. A failure is remembered (the handler's calls here raise :class:`SetupFailed`)
    and raised as :class:`SetupFailed`."""
    try:
        _load(key, blob)
    except SetupFailed as exc:
        _failed[key] = str(exc)
        raise
    except Exception as exc:  # e.g. the handler's module cannot be imported here
        _failed[key] = f"loading the handler failed in a worker: {exc!r}"
        raise SetupFailed(_failed[key]) from exc


def uninstall(key: str) -> None:
    """Run the ``teardown()`` of the handler ``key`` in this worker and forget it."""
    with _loading:
        _failed.pop(key, None)
        adapted = _loaded.pop(key, None)
    if adapted is not None:
        _teardown(adapted)


def _exit_with(parent: int) -> None:
    """Exit this process as soon as ``parent`` is gone."""
    try:
        fd = os.pidfd_open(parent)
    except ProcessLookupError:
        os._exit(1)  # already gone
    except (AttributeError, OSError):  # no pidfds (not Linux, or an old kernel)
        fd = None

    def watch() -> None:
        if fd is not None:
            select.select([fd], [], [])  # readable once the process has exited
        else:
            while _alive(parent):
                threading.Event().wait(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="asyncpipe-parent-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    with _loading:
        loaded = _loaded.get(key)
        if loaded is None:
            loaded = _loaded[key] = _set_up(blob)
        return loaded


def _set_up(blob: bytes) -> Adapted:
    obj = pickle.loads(blob)
    adapted = adapt(obj)
    setup = getattr(obj, "setup", None)
    if setup is not None:
        try:
            result = setup()
            if inspect.isawaitable(result):
                _run(result)
        except Exception as exc:
            raise SetupFailed(f"setup() of {adapted.label} failed in a worker: {exc!r}") from exc
    global _finalizing
    if not _finalizing:
        # Runs when the worker exits normally (pool shutdown), not on a crash.
        multiprocessing.util.Finalize(None, _teardown_all, exitpriority=10)
        _finalizing = True
    return adapted


def _teardown_all() -> None:
    with _loading:
        loaded = list(_loaded.values())
        _loaded.clear()
    for adapted in loaded:
        _teardown(adapted)


def _teardown(adapted: Adapted) -> None:
    teardown = getattr(adapted.obj, "teardown", None)
    try:
        if teardown is not None:
            result = teardown()
            if inspect.isawaitable(result):
                _run(result)
    except Exception:
        logger.exception("teardown of %s failed in worker", adapted.label)
