"""Appending to a text file from a sink: open, recover from an interrupted write, flush.

A sink appends whole batches with one ``write`` and then flushes (and optionally fsyncs),
so a batch is in the operating system's hands before the handler returns and its
receipts resolve. If the process died in the middle of a write, the file ends with a
partial line: on open, that partial line is cut off (it belonged to a batch that was never
acknowledged, so it will be delivered again), and a warning is logged.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import aiofiles
import aiofiles.os

__all__ = ["AppendingFile"]

logger = logging.getLogger(__name__)

_SCAN = 64 * 1024  # bytes read at a time looking for the first or last line break


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
        async with aiofiles.open(self.path, "r+b") as file:
            size = await file.seek(0, os.SEEK_END)
            end = size
            while end > 0:
                start = max(0, end - _SCAN)
                await file.seek(start)
                block = await file.read(end - start)
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
                await file.truncate(end)
            if end == 0:
                return None
            await file.seek(0)
            head = await file.read(min(end, _SCAN))
            while b"\n" not in head and len(head) < end:
                head += await file.read(min(end - len(head), _SCAN))
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
            await file.close()
