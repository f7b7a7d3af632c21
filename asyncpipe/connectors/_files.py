"""Files in a thread: opening one safely from a coroutine, and appending to one from a sink.

Every blocking file call runs in the loop's default executor, and stays correct when the
coroutine waiting for it is cancelled: an open that goes ahead anyway is closed, and a
close is never withdrawn. (``aiofiles``' context manager does not ensure that: cancelled
while its close is still queued in the executor, it withdraws the close, and the file stays
open until the garbage collector finds it.)

A sink appends whole batches with one ``write`` and then flushes (and optionally fsyncs),
all in one hand-off to a thread, so a batch is in the operating system's hands before the
handler returns and its receipts resolve. If the process died in the middle of a write,
the file ends with a partial line: on open, that partial line is cut off (it belonged to a
batch that was never acknowledged, so it will be delivered again), and a warning is logged.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import IO, Any

__all__ = ["AppendingFile", "opened"]

logger = logging.getLogger(__name__)

_SCAN = 64 * 1024  # bytes read at a time looking for the first or last line break


async def open_in_thread(path: str | os.PathLike[str], mode: str, **kwargs: Any) -> IO[Any]:
    """``open(path, mode, **kwargs)`` in a thread. If the caller is cancelled meanwhile, the
    open still goes ahead and the file is closed at once."""
    opening: asyncio.Future[IO[Any]] = asyncio.get_running_loop().run_in_executor(
        None, functools.partial(open, path, mode, **kwargs)
    )
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_if_opened)
        raise


async def close_in_thread(close: Any) -> None:
    """Call ``close()`` in a thread; a cancelled caller does not withdraw it."""
    await asyncio.shield(asyncio.get_running_loop().run_in_executor(None, close))


@asynccontextmanager
async def opened(path: str | os.PathLike[str], mode: str, **kwargs: Any) -> AsyncIterator[IO[Any]]:
    """``open(path, mode, **kwargs)`` in a thread, closed in a thread on leaving, also when
    the caller is cancelled. Do the file's blocking calls with ``loop.run_in_executor``."""
    file = await open_in_thread(path, mode, **kwargs)
    try:
        yield file
    finally:
        await close_in_thread(file.close)


def _close_if_opened(opening: asyncio.Future[IO[Any]]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()  # never used, so nothing to flush: does not block


class AppendingFile:
    """A text file a sink appends to (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str], *, encoding: str, fsync: bool) -> None:
        self.path = os.fspath(path)
        self.encoding = encoding
        self.fsync = fsync
        self._file: IO[str] | None = None
        # Held by the thread doing a write or the close: a write whose caller was
        # cancelled may still be running, and the next one must not interleave with it.
        self._lock = threading.Lock()
        #: Whether the file holds data (after recovery; set by the first write).
        self.had_data = False

    @property
    def is_open(self) -> bool:
        return self._file is not None

    async def open(self) -> str | None:
        """Open for appending (creating the file); return its first line if it has data."""
        first_line = None
        if await asyncio.to_thread(os.path.exists, self.path):
            first_line = await self._recover()
        self.had_data = first_line is not None
        self._file = await open_in_thread(self.path, "a", encoding=self.encoding, newline="")
        return first_line

    async def _recover(self) -> str | None:
        loop = asyncio.get_running_loop()

        def call(method: Any, *args: Any) -> asyncio.Future[Any]:
            return loop.run_in_executor(None, method, *args)

        async with opened(self.path, "r+b") as file:
            size = await call(file.seek, 0, os.SEEK_END)
            end = size
            while end > 0:
                start = max(0, end - _SCAN)
                await call(file.seek, start)
                block = await call(file.read, end - start)
                cut = block.rfind(b"\n")
                if cut >= 0:
                    end = start + cut + 1
                    break
                end = start
            if end < size:
                logger.warning(
                    "%s: cutting off an incomplete last line (%d bytes) left by an "
                    "interrupted write",
                    self.path,
                    size - end,
                )
                await call(file.truncate, end)
            if end == 0:
                return None
            await call(file.seek, 0)
            head: bytes = await call(file.read, min(end, _SCAN))
            while b"\n" not in head and len(head) < end:
                head += await call(file.read, min(end - len(head), _SCAN))
            return head.split(b"\n", 1)[0].decode(self.encoding).rstrip("\r")

    async def write(self, text: str, *, header: str = "") -> None:
        """Append ``text`` -- after ``header`` if the file holds no data yet -- and flush
        it (and fsync, if asked) before returning."""
        file = self._file
        if file is None:
            raise RuntimeError(f"{self.path}: file is not open")
        await asyncio.get_running_loop().run_in_executor(None, self._append, file, text, header)

    def _append(self, file: IO[str], text: str, header: str) -> None:
        with self._lock:  # one write at a time, so the header is written once
            file.write(text if self.had_data else header + text)
            file.flush()
            if self.fsync:
                os.fsync(file.fileno())
            self.had_data = True

    async def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            await close_in_thread(functools.partial(self._close, file))

    def _close(self, file: IO[str]) -> None:
        with self._lock:  # after a write still under way
            file.close()
