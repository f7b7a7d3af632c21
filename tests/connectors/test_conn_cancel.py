"""A file a connector opened is closed however its coroutine is cancelled.

The file calls are queued in a one-thread default executor held busy, so a cancellation
lands while each of them is still waiting for the thread: the case in which a plain
``aiofiles`` context manager withdraws its queued close and leaks the file.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing, asynccontextmanager
from pathlib import Path

from asyncpipe.connectors._files import AppendingFile
from asyncpipe.connectors._lines import read_segments


def open_descriptors_of(path: Path) -> list[str]:
    fds = Path("/proc/self/fd")
    found = []
    for fd in os.listdir(fds):
        try:
            if os.readlink(fds / fd) == str(path):
                found.append(fd)
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor, say)
    return found


@asynccontextmanager
async def one_busy_thread() -> AsyncIterator[Callable[[], None]]:
    """A one-thread default executor; ``hold()`` queues a job that blocks it until the
    block is left, which then waits for everything queued behind that job."""
    loop = asyncio.get_running_loop()
    gate = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        loop.set_default_executor(pool)
        blockers: list[asyncio.Future[bool]] = []
        try:
            yield lambda: blockers.append(loop.run_in_executor(None, gate.wait))
        finally:
            gate.set()
            await asyncio.gather(*blockers)
            await loop.run_in_executor(None, lambda: None)  # FIFO: all before it has run
            loop.set_default_executor(ThreadPoolExecutor())


async def read_all(path: Path, started: asyncio.Event) -> None:
    segments = read_segments(path, encoding="utf-8", chunk_size=8)
    async with aclosing(segments):
        async for _ in segments:
            started.set()


async def test_cancelled_while_the_open_is_queued(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("one\ntwo\n")
    async with asyncio.timeout(10):
        async with one_busy_thread() as hold:
            hold()
            task = asyncio.create_task(read_all(path, asyncio.Event()))
            await asyncio.sleep(0)  # the task starts and queues its open behind the hold
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert task.cancelled()
        assert open_descriptors_of(path) == []


async def test_cancelled_twice_while_reading_and_closing(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("line\n" * 1000)  # 8-byte reads: far from done when held
    async with asyncio.timeout(10):
        async with one_busy_thread() as hold:
            started = asyncio.Event()
            task = asyncio.create_task(read_all(path, started))
            await started.wait()  # the file is open and partly read
            hold()
            await asyncio.sleep(0)  # the next read is queued behind the hold
            task.cancel()  # the read is withdrawn; the close is queued
            await asyncio.sleep(0)
            task.cancel()  # must not withdraw the close
            await asyncio.gather(task, return_exceptions=True)
            assert task.cancelled()
            assert open_descriptors_of(path) != []  # its close is still waiting
        assert open_descriptors_of(path) == []


async def test_an_appending_file_closes_when_its_close_is_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    file = AppendingFile(path, encoding="utf-8", fsync=False)
    async with asyncio.timeout(10):
        await file.open()
        await file.write("kept\n")
        async with one_busy_thread() as hold:
            hold()
            dropped = asyncio.create_task(file.write("never\n"))
            await asyncio.sleep(0)  # queued behind the hold
            dropped.cancel()  # not started: withdrawn, nothing written
            closing = asyncio.create_task(file.close())
            await asyncio.sleep(0)
            closing.cancel()  # must not withdraw the close
            await asyncio.gather(dropped, closing, return_exceptions=True)
            assert dropped.cancelled() and closing.cancelled()
        assert open_descriptors_of(path) == []
    assert path.read_text() == "kept\n"
