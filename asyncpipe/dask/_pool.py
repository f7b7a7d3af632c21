"""The pool of a run whose offloaded nodes run on a Dask cluster.

A run connects an asynchronous ``Client`` on its own event loop (no thread hand-offs per
call), registers one worker plugin per handler (``_plugin``: set up once per worker) and
counts the cluster's worker threads. Each call is one Dask task, ``node-<uuid>``, whose
future is awaited on the loop and released as soon as its result is in.

Failures, in the terms of the process pool's (``asyncpipe._offload``): a worker that dies
has its tasks run again by Dask elsewhere, up to the scheduler's ``allowed-failures``;
then the call fails with ``KilledWorker`` and is sent again, one suspect at a time, up to
``crash_retries`` times, before it raises :class:`WorkerCrashed`. A scheduler that cannot
be reached fails the calls at once with :class:`SchedulerUnavailable` (the client
reconnects by itself if it comes back).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import pickle
import uuid
from typing import Any

from distributed import Client, KilledWorker
from distributed.client import FutureCancelledError
from distributed.protocol.pickle import dumps

from .. import _worker
from .._errors import HandlerSetupError, WorkerCrashed
from .._handler import Rejection
from .._offload import OffloadedHandler
from ._executor import DaskExecutor, SchedulerUnavailable
from ._plugin import HandlerPlugin

__all__ = ["DaskPool"]

logger = logging.getLogger(__name__)

#: Seconds the teardowns are still waited for once the run has been aborted: enough for
#: the scheduler to take the request (it then tears down on its own).
_KILLED_GRACE = 2.0


class DaskPool:
    """Runs offloaded handlers as Dask tasks (see the module doc)."""

    def __init__(self, target: DaskExecutor, *, max_workers: int) -> None:
        self.max_workers = max_workers
        self.restarts = 0
        self.target = target
        self.address = target.address
        self._client: Client | None = None
        self._owned = True
        self._handlers: dict[str, OffloadedHandler] = {}
        self._installed: list[str] = []
        self._suspects = asyncio.Lock()
        self._killed = False
        self._closing: asyncio.Timeout | None = None

    def add(self, handler: OffloadedHandler) -> None:
        # Pickled again as Dask does: what the workers cannot import (a handler defined in
        # ``__main__``: a notebook, ``python -c``) goes by value (cloudpickle).
        by_value = dumps(pickle.loads(handler.blob))
        self._handlers[handler.key] = dataclasses.replace(handler, blob=by_value)

    async def start(self) -> None:
        """Connect, count the workers' threads, set every handler up on every worker.

        Raises :class:`SchedulerUnavailable` if the scheduler cannot be reached, and
        :class:`HandlerSetupError` if a handler's ``setup()`` failed on a worker.
        """
        client = self._client = await self._connect()
        threads = await client.nthreads()
        self.max_workers = sum(threads.values()) or self.max_workers
        logger.info(
            "Dask scheduler %s: %d worker(s), %d thread(s)",
            self.address,
            len(threads),
            sum(threads.values()),
        )
        for key, handler in self._handlers.items():
            self._installed.append(key)  # unregistered at the end even if setup failed
            try:
                await client.register_plugin(HandlerPlugin(key, handler.blob), name=key)
            except _worker.SetupFailed as exc:
                raise HandlerSetupError(handler.node, f"on a Dask worker: {exc}") from exc
            except OSError as exc:  # distributed's CommClosedError among them
                if client.status != "running":
                    raise self._unavailable(client) from exc
                # The scheduler keeps the plugin, but could not hear back from every worker
                # (one died meanwhile). Calls still find a failed setup (SetupFailed) or a
                # worker without the handler (HandlerMissing: it is sent along).
                logger.warning(
                    "setting %s up on the Dask workers of %s: a worker did not answer (%r)",
                    handler.label,
                    self.address,
                    exc,
                )

    async def _connect(self) -> Client:
        given = self.target.client
        if given is not None and given.asynchronous and _on_this_loop(given):
            self._owned = False
            return given
        try:
            client: Client = await Client(
                self.address,
                asynchronous=True,
                set_as_default=False,
                security=self.target.security,
                timeout=self.target.connect_timeout,
            )
        except (OSError, TimeoutError) as exc:
            raise SchedulerUnavailable(
                f"cannot reach the Dask scheduler at {self.address}: {exc}"
            ) from exc
        return client

    async def call(self, handler: OffloadedHandler, data: Any) -> tuple[Any, list[Rejection]]:
        """Run ``handler`` on ``data`` as a Dask task; return (result, rejections).

        Raises what the handler raised, :class:`HandlerSetupError` if its ``setup()``
        failed on the worker, :class:`WorkerCrashed` if its workers kept dying, and
        :class:`SchedulerUnavailable` if the scheduler cannot be reached.
        """
        crashes = 0
        while True:
            try:
                if crashes:
                    async with self._suspects:
                        return await self._submit(handler, data)
                return await self._submit(handler, data)
            except _worker.SetupFailed as exc:
                raise HandlerSetupError(handler.node, f"on a Dask worker: {exc}") from exc
            except KilledWorker as exc:
                crashes += 1
                self.restarts += 1
                if crashes > self.target.crash_retries:
                    raise WorkerCrashed(
                        handler.node,
                        f"Dask workers died running {handler.label} ({crashes} time(s)): {exc}",
                    ) from exc
                logger.warning(
                    "Dask workers died running %s; sending it again (%d/%d)",
                    handler.label,
                    crashes,
                    self.target.crash_retries,
                )

    async def _submit(self, handler: OffloadedHandler, data: Any) -> tuple[Any, list[Rejection]]:
        try:
            return await self._once(handler, None, data)
        except _worker.HandlerMissing:  # a worker the plugin has not reached yet
            return await self._once(handler, self._handlers[handler.key].blob, data)

    async def _once(
        self, handler: OffloadedHandler, blob: bytes | None, data: Any
    ) -> tuple[Any, list[Rejection]]:
        client = self._client
        if client is None or client.status != "running":
            raise self._unavailable(client)
        future = client.submit(
            _worker.call,
            handler.key,
            blob,
            data,
            key=f"{handler.node}-{uuid.uuid4().hex}",
            pure=False,
        )
        try:
            result: tuple[Any, list[Rejection]] = await future
        except FutureCancelledError as exc:
            if client.status != "running":  # cancelled because the scheduler went away
                raise self._unavailable(client) from exc
            raise
        finally:
            future.release()
        return result

    def _unavailable(self, client: Client | None) -> SchedulerUnavailable:
        status = "not connected" if client is None else f"client {client.status}"
        return SchedulerUnavailable(
            f"the Dask scheduler at {self.address} is unreachable ({status})"
        )

    def kill(self) -> None:
        """Stop waiting for teardowns soon (tasks in flight are released by their
        callers' cancellation; Dask cannot interrupt a running one)."""
        self._killed = True
        if self._closing is not None:
            self._closing.reschedule(asyncio.get_running_loop().time() + _KILLED_GRACE)

    async def aclose(self) -> None:
        """Tear the handlers down on the workers (best effort), close our client."""
        client, self._client = self._client, None
        if client is None:
            return
        try:
            if self._installed and client.status == "running":
                await self._unregister(client)
        finally:
            if self._owned:
                await client.close()

    async def _unregister(self, client: Client) -> None:
        timeout = _KILLED_GRACE if self._killed else self.target.teardown_timeout
        installed, self._installed = self._installed, []
        try:
            async with asyncio.timeout(timeout) as self._closing:
                for key in installed:
                    try:
                        # The scheduler forgets the plugin first, then asks every worker
                        # to tear the handler down; a worker that joined meanwhile has
                        # none (a KeyError): the others still did.
                        await client.unregister_worker_plugin(key)
                    except Exception as exc:
                        logger.warning(
                            "tearing %s down on the Dask workers of %s: %r",
                            self._handlers[key].label,
                            self.address,
                            exc,
                        )
        except TimeoutError:
            logger.warning(
                "tearing the handlers down on the Dask workers of %s took over %.1f s; "
                "left to the workers",
                self.address,
                timeout,
            )
        finally:
            self._closing = None


def _on_this_loop(client: Client) -> bool:
    return getattr(client.loop, "asyncio_loop", None) is asyncio.get_running_loop()
