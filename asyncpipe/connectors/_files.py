"""Files in a thread: opening one safely from a coroutine, and appending to one from a sink.

:func:`opened` opens and closes a file in the loop's default executor and stays correct when
the coroutine using it is cancelled. (``aiofiles``' context manager does not: a cancellation
that arrives while its close is still queued in the executor cancels the close, and the file
is left open until the garbage collector finds it.)

Appending to a text file from a sink: open, recover from an interrupted write, flush.

A sink appends whole batches with one ``write`` and then flushes (and optionally fsyncs),
so a batch is in the operating system's hands before the handler returns and its
receipts resolve. If the process died in the middle of a write, the file ends with a
partial line: on open, that partial line is cut off (it belonged to a batch that was never
acknowledged, so it will be delivered again), and a warning is logged.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import IO, Any

import aiofiles
import aiofiles.os

__all__ = ["AppendingFile", "opened"]

logger = logging.getLogger(__name__)

_SCAN = 64 * 1024  # bytes read at a time looking for the first or last line break


@asynccontextmanager
async def opened(path: str | os.PathLike[str], mode: str, **kwargs: Any) -> AsyncIterator[IO[Any]]:
    """``open(path, mode, **kwargs)`` in a thread; the file is closed on leaving, in a thread,
    also when the caller is cancelled at any point (a queued open or close is never
    withdrawn). Do the file's blocking calls with ``loop.run_in_executor``."""
    loop = asyncio.get_running_loop()
    opening: asyncio.Future[IO[Any]] = loop.run_in_executor(
        None, functools.partial(open, path, mode, **kwargs)
    )
    try:
        file = await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_if_opened)  # the open itself still goes ahead
        raise
    try:
        yield file
    finally:
        await asyncio.shield(loop.run_in_executor(None, file.close))


def _close_if_opened(opening: asyncio.Future[IO[Any]]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()  # never used, so nothing to flush: does not block


class AppendingFile:
    """A text file a sink appends to (see the module docstring)."""

    def __init__(self, path: str | os.PathLike[str], *, encoding: str, fsync: bool) -> None:
        self.path = os.fspath(path)
        self.encoding = encoding
        self.fsync = fsync
        self._file: Any = None
        self._lock = asyncio.Lock()
        #: Whether the file held data when it was opened (after recovery).
        self.had_data = False

    @property
    def is_open(self) -> bool:
        return self._file is not None

    async def open(self) -> str | None:
        """Open for appending (creating the file); return its first line if it has data."""
        first_line = None
        if await aiofiles.os.path.exists(self.path):
            first_line = await self._recover()
        self.had_data = first_line is not None
        self._file = await aiofiles.open(self.path, "a", encoding=self.encoding, newline="")
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
        if self._file is None:
            raise RuntimeError(f"{self.path}: file is not open")
        async with self._lock:  # one write at a time, so the header is written once
            await self._file.write(text if self.had_data else header + text)
            await self._file.flush()
            if self.fsync:
                await asyncio.to_thread(os.fsync, self._file.fileno())
            self.had_data = True

    async def close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            await asyncio.shield(file.close())  # a cancelled teardown still closes it
