"""The Dask workers' side: a worker plugin that loads an offloaded handler.

The plugin is registered when a run starts: every worker of the cluster, and every worker
that joins later (before it takes a task), loads the handler and runs its ``setup()``
once; unregistering it when the run ends runs ``teardown()``. Both run in the worker's
task thread pool, not on its event loop, so a slow ``setup()`` (a model loading) does not
stall the worker's heartbeats, and a single-threaded worker sets the handler up in the
thread that will call it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from distributed import Worker, WorkerPlugin

from .. import _worker

__all__ = ["HandlerPlugin"]


class HandlerPlugin(WorkerPlugin):
    """Loads one offloaded handler (its key and pickled form) into each worker."""

    idempotent = False

    def __init__(self, key: str, blob: bytes) -> None:
        self.key = key
        self.blob = blob

    async def setup(self, worker: Worker) -> None:
        # A failure is remembered by the worker (the handler's calls there fail with it)
        # and raised: to the run that registers the plugin, its start fails.
        await _in_task_thread(worker, _worker.install, self.key, self.blob)

    async def teardown(self, worker: Worker) -> None:
        await _in_task_thread(worker, _worker.uninstall, self.key)


async def _in_task_thread(worker: Worker, function: Callable[..., None], *args: Any) -> None:
    executor = worker.executors.get("default")
    try:
        done = asyncio.get_running_loop().run_in_executor(executor, function, *args)
    except RuntimeError:  # the executor is shut down: the worker is closing
        function(*args)
        return
    await done
