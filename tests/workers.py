"""Handlers for tests that run them in worker processes.

Worker processes start with ``forkserver``, so a handler travels by reference (module and
qualified name) and must be importable there: everything here is defined at module level.
``tests/`` is on ``sys.path`` (pytest's prepend import mode), which the workers inherit, so
they import this module as ``workers``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from pathlib import Path
from typing import Any

from asyncpipe import BaseHandler, reject

#: setup() calls of :class:`CountSetups` in this process (a process global, so a handler
#: loaded twice in one worker would show 2 even though each copy counts from scratch).
SETUP_CALLS = 0

#: Set by :func:`name_pool` when a user's own pool starts this worker process.
POOL_NAME: str | None = None


def worker_pid(message: Any) -> int:
    """The process that handled the message."""
    return os.getpid()


def square(x: int) -> int:
    return x * x


def name_pool(name: str) -> None:
    """``initializer`` for a user's ProcessPoolExecutor: label its worker processes."""
    global POOL_NAME
    POOL_NAME = name


def where(message: Any) -> tuple[int, str | None, str]:
    """(process id, pool label, thread name) of the call."""
    return os.getpid(), POOL_NAME, threading.current_thread().name


def wait_for_all_workers(address: str, timeout: float = 20.0) -> None:
    """Rendezvous: tell the test's unix socket server this process is up (its pid), then
    block until the server answers ``go`` -- once every worker has checked in."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
        sock.sendall(f"{os.getpid()}\n".encode())
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = sock.recv(16)
            if not chunk:
                raise ConnectionError("rendezvous server went away")
            answer += chunk
    if answer != b"go\n":
        raise ConnectionError(f"unexpected rendezvous answer {answer!r}")


class CountSetups(BaseHandler):
    """Returns (pid, setup() calls in this process). Its setup() waits until every worker
    has loaded it, so with enough work every worker of the pool takes part."""

    def __init__(self, rendezvous: str) -> None:
        self.rendezvous = rendezvous

    def setup(self) -> None:
        global SETUP_CALLS
        SETUP_CALLS += 1
        wait_for_all_workers(self.rendezvous)

    def handle(self, message: Any) -> tuple[int, int]:
        return os.getpid(), SETUP_CALLS


class AsyncDouble(BaseHandler):
    """An ``async def handle`` (run on the worker's own event loop)."""

    async def handle(self, x: int) -> tuple[int, int]:
        await asyncio.sleep(0)
        return x * 2, os.getpid()


def twice(x: int) -> Any:
    """A generator handler: two outputs per message."""
    yield x, os.getpid()
    yield x + 100, os.getpid()


async def twice_async(x: int) -> Any:
    """An async generator handler: two outputs per message."""
    yield x, os.getpid()
    await asyncio.sleep(0)
    yield x + 100, os.getpid()


def tag_chunk(chunk: list[int]) -> list[tuple[int, int, int]]:
    """Each item of a chunk with the chunk's size and the handling process."""
    return [(x, len(chunk), os.getpid()) for x in chunk]


def reject_odd(batch: list[int]) -> list[int]:
    """Keeps even items; rejects odd ones with their index in the batch it was given."""
    kept = []
    for i, x in enumerate(batch):
        if x % 2:
            reject(x, "odd", index=i)
        else:
            kept.append(x)
    return kept


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three is not welcome")
    return x


class CrashOnce(BaseHandler):
    """Kills its worker process on ``poison`` the first time only: the first attempt
    creates ``marker`` atomically (O_CREAT | O_EXCL) and exits; any retry finds it."""

    def __init__(self, marker: str, poison: int) -> None:
        self.marker = marker
        self.poison = poison

    def handle(self, x: int) -> int:
        if x == self.poison:
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return x
            os.close(fd)
            os._exit(1)
        return x


class CrashAlways(BaseHandler):
    """Kills its worker process every time it sees ``poison``."""

    def __init__(self, poison: int) -> None:
        self.poison = poison

    def handle(self, x: int) -> int:
        if x == self.poison:
            os._exit(1)
        return x


class TeardownMarker(BaseHandler):
    """Returns its pid; its teardown() leaves a file ``teardown-<pid>`` in ``directory``."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def handle(self, message: Any) -> int:
        return os.getpid()

    def teardown(self) -> None:
        Path(self.directory, f"teardown-{os.getpid()}").touch()


class Hang(BaseHandler):
    """A job that never finishes: tells the test's unix socket server at ``address`` that
    it started (its pid), then waits on an event nobody sets. It gives up after ``limit``
    seconds only so that a test that fails does not leave it running for good."""

    def __init__(self, address: str, limit: float = 30.0) -> None:
        self.address = address
        self.limit = limit

    def handle(self, message: Any) -> Any:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(self.address)
            sock.sendall(f"{os.getpid()}\n".encode())
        threading.Event().wait(self.limit)
        return message


class FailingSetup(BaseHandler):
    """Its setup() fails (a model file that is not there); handle() would echo."""

    def setup(self) -> None:
        raise FileNotFoundError("model.bin")

    def handle(self, message: Any) -> Any:
        return message


def drop_chunk(chunk: list[Any]) -> None:
    """A filter for parallel=True nodes: drops every chunk."""
    return None


def to_float32(batch: list[float]) -> list[float]:
    """Fails for the whole batch when any value overflows float32 (as a model would)."""
    for value in batch:
        if abs(value) > 3.4e38:
            raise OverflowError(f"{value!r} is too large for float32")
    return [value * 2 for value in batch]


#: setup() and teardown() calls of :class:`SetUpOncePerWorker` in this process, by token.
LIFECYCLE: dict[str, list[str]] = {}


class SetUpOncePerWorker(BaseHandler):
    """Squares; returns (square, pid, setup() calls so far in this process). Records its
    setup() and teardown() in :data:`LIFECYCLE` under ``token`` (one test's own), which a
    test reads in each Dask worker with :func:`lifecycle_of`."""

    def __init__(self, token: str) -> None:
        self.token = token

    def setup(self) -> None:
        LIFECYCLE.setdefault(self.token, []).append("setup")

    def handle(self, x: int) -> tuple[int, int, int]:
        return x * x, os.getpid(), LIFECYCLE[self.token].count("setup")

    def teardown(self) -> None:
        LIFECYCLE.setdefault(self.token, []).append("teardown")


def lifecycle_of(token: str) -> list[str]:
    """What :class:`SetUpOncePerWorker` with ``token`` went through in this process."""
    return LIFECYCLE.get(token, [])


class AskFirst(BaseHandler):
    """Returns (message, pid) once the test's unix socket server at ``address`` answers
    ``go`` to this call (it is told the call's pid first): the test decides when each call
    ends, and may kill the process meanwhile."""

    def __init__(self, address: str) -> None:
        self.address = address

    def handle(self, message: Any) -> tuple[Any, int]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(30)
            sock.connect(self.address)
            sock.sendall(f"{os.getpid()}\n".encode())
            if sock.recv(16) != b"go\n":
                raise ConnectionError("the test did not say go")
        return message, os.getpid()
