"""What a run acquires before its nodes start and releases after they end: the dead-letter
sink, the handlers' ``setup()``/``teardown()``, the process pools.

Release is the last part of a shutdown: teardowns in reverse order of setup, each within a
deadline; the pools shut down off the loop (or are killed, after an abort or a failure);
the state store, then the dead-letter sink, closed last. Once begun it runs to its end
even if the run's task is cancelled again; only :meth:`Resources.cut_short` (a second
signal, ``abort()`` while cleaning) skips the remaining teardowns.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from ._deadletter import DeadLetter, DeadLetterSink
from ._errors import AsyncpipeError, HandlerSetupError
from ._handler import _call_hook
from ._offload import WorkerPool
from ._receipt import Receipt
from ._tasks import gather_or_first_error

__all__ = ["Resources"]

logger = logging.getLogger(__name__)

_CLEANUP_TIMEOUT = 30.0  # seconds any one teardown (or the sink's close) may take


class Resources:
    """A run's dead-letter sink, handlers (node name, handler object) and process pools."""

    def __init__(
        self,
        sink: DeadLetterSink,
        handlers: Sequence[tuple[str, Any]],
        pools: Sequence[WorkerPool],
        state_store: Any = None,
    ) -> None:
        self.sink = sink
        self.state_store = state_store  # opened and closed only when a node keeps state
        self._handlers = list(handlers)  # on-loop handlers; cpu ones live in the workers
        self._pools = list(pools)
        self._set_up: list[tuple[str, Any]] = []
        self._cut_short = False
        self._teardown_timeout: asyncio.Timeout | None = None

    async def acquire(self) -> None:
        """Open the sink, then set up the handlers and start the pools' workers (which set
        up theirs) together. Raises :class:`HandlerSetupError` naming the node whose
        ``setup()`` failed."""
        try:
            await _call_hook(self.sink, "open")
        except Exception as exc:
            raise AsyncpipeError(f"dead-letter sink {self.sink!r} failed to open: {exc!r}") from exc
        if self.state_store is not None:
            try:
                await self.state_store.open()
            except Exception as exc:
                raise AsyncpipeError(
                    f"state store {self.state_store!r} failed to open: {exc!r}"
                ) from exc

        async def setup(name: str, handler: Any) -> None:
            try:
                await _call_hook(handler, "setup")
            except Exception as exc:
                raise HandlerSetupError(name, f"setup() failed: {exc!r}") from exc
            self._set_up.append((name, handler))

        await gather_or_first_error(
            [setup(name, handler) for name, handler in self._handlers]
            + [pool.start() for pool in self._pools],
            "asyncpipe:setup",
        )

    async def write(self, letter: DeadLetter, receipt: Receipt | None) -> None:
        """Write a dead letter (the sink should not raise; if it does, log the letter)."""
        if receipt is not None:
            receipt.dead_letters.append(letter)
        try:
            await self.sink.write(letter)
        except Exception:
            logger.exception(
                "node %r: dead-letter sink failed; letter: %s: %s payload=%.200r",
                letter.node,
                letter.error_type,
                letter.error_message,
                letter.payload,
            )

    async def release(self, *, graceful: bool) -> None:
        """Release everything to the end (see the module docstring); a cancellation that
        arrives meanwhile is raised once done."""
        release = asyncio.create_task(self._release(graceful), name="asyncpipe:cleanup")
        cancelled = False
        while True:
            try:
                await asyncio.shield(release)
            except asyncio.CancelledError:
                if release.cancelled():
                    raise
                if not release.done():
                    cancelled = True
                    continue
            break
        if cancelled:
            raise asyncio.CancelledError
        release.result()

    def cut_short(self) -> None:
        """Skip the teardowns not yet done, end the one running, kill the workers."""
        self._cut_short = True
        if self._teardown_timeout is not None:
            self._teardown_timeout.reschedule(asyncio.get_running_loop().time())
        self.kill_workers()

    def kill_workers(self) -> None:
        for pool in self._pools:
            pool.kill()

    async def _release(self, graceful: bool) -> None:
        if not graceful:
            self.kill_workers()  # aborted or failed: don't wait for running jobs
        # Only handlers whose setup() completed are torn down, in reverse order.
        while self._set_up and not self._cut_short:
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
        if self.state_store is not None:
            try:
                async with asyncio.timeout(_CLEANUP_TIMEOUT):
                    await self.state_store.aclose()
            except Exception:
                logger.exception("state store %r failed to close", self.state_store)
        try:
            async with asyncio.timeout(_CLEANUP_TIMEOUT):
                await _call_hook(self.sink, "aclose")
        except Exception:
            logger.exception("dead-letter sink %r failed to close", self.sink)
