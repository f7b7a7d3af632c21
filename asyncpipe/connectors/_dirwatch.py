"""Waking up when a directory changes: ``watchfiles`` (inotify on Linux), else polling.

:class:`DirectoryChanges` only says *that* something changed; the trigger then rescans
the directory, so a missed or coalesced event costs nothing but latency. While the watched
directory is missing, its parent is watched instead, to notice it coming back. If the
operating system's watcher cannot be used (no inotify, the watch limit reached) it falls
back to polling: the trigger's periodic rescans are then the only wake-ups.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from watchfiles import Change, awatch

__all__ = ["DirectoryChanges"]

logger = logging.getLogger(__name__)

_STOP_TIMEOUT = 5.0  # seconds to wait for a watcher thread to notice it must stop
_DEBOUNCE_MS = 100  # group a burst of events into one wake-up, for at most this long
_STEP_MS = 20  # ... ending the burst after this long without events


class DirectoryChanges:
    """Wakes :meth:`wait` when something changes in a directory (see module docstring)."""

    def __init__(self, directory: Path, *, polling: bool = False) -> None:
        self.directory = directory
        self.polling = polling
        self._changed = asyncio.Event()
        self._target: Path | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._stopping: set[asyncio.Task[None]] = set()

    def watch(self, *, exists: bool, parent_exists: bool) -> None:
        """(Re)start watching the directory -- or its parent while it is missing."""
        if self.polling:
            return
        target = self.directory if exists else (self.directory.parent if parent_exists else None)
        if self._task is not None and not self._task.done() and target == self._target:
            return
        self._stop_watching()
        self._target = target
        if target is not None:
            self._stop = asyncio.Event()
            self._task = asyncio.create_task(
                self._watch(target, self._stop), name=f"asyncpipe:watch:{target}"
            )

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a change; True if there was one."""
        if not self._changed.is_set() and timeout > 0:
            try:
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
            except TimeoutError:
                return False
        changed = self._changed.is_set()
        self._changed.clear()
        return changed

    async def aclose(self) -> None:
        """Stop watching and wait (boundedly) for the watcher threads to finish."""
        self._stop_watching()
        tasks, self._stopping = self._stopping, set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=_STOP_TIMEOUT)
            for task in pending:
                task.cancel()

    def _stop_watching(self) -> None:
        # watchfiles checks the stop event every few milliseconds in its thread; the task
        # then ends by itself. It stays owned here until aclose() has seen it finish.
        if self._stop is not None:
            self._stop.set()
        if self._task is not None and not self._task.done():
            self._stopping.add(self._task)
            self._task.add_done_callback(self._stopping.discard)
        self._task = self._stop = None

    async def _watch(self, target: Path, stop: asyncio.Event) -> None:
        watched = str(target)

        def interesting(change: Change, path: str) -> bool:
            # Hidden files (temporary names, the trigger's own manifest) are never fed:
            # their changes need no rescan. The directory's own events always do.
            return path == watched or not os.path.basename(path).startswith(".")

        try:
            async for _ in awatch(
                target,
                watch_filter=interesting,
                stop_event=stop,
                recursive=False,
                debounce=_DEBOUNCE_MS,
                step=_STEP_MS,
                force_polling=False,
            ):
                self._changed.set()
        except FileNotFoundError:
            logger.debug("%s vanished before it could be watched", target)
        except Exception as exc:
            logger.warning(
                "cannot watch %s (%s: %s); falling back to polling",
                target,
                type(exc).__name__,
                exc,
            )
            self.polling = True
        self._changed.set()  # ended: let the trigger rescan and re-arm
