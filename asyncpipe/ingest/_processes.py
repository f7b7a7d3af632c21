"""Several ingestion server processes sharing one port, supervised.

:func:`serve_processes` starts ``processes`` children; each builds its own
:class:`IngestServer` (and pipeline) with ``build(port)`` and runs :func:`serve` on it.
They all listen on the same port: gRPC sets ``SO_REUSEPORT`` on Linux, so the kernel
spreads new connections over the listening processes. The supervisor holds the port
(bound, not listening) so that it stays theirs across restarts, even when ``port=0``
asked for a free one.

A child's life: ``starting`` (building, its pipeline warming) → ``serving`` (it said so
over its pipe) → ``exited``. A child that exits before all have served once fails the
start: the others are stopped and :func:`serve_processes` raises ``RuntimeError``. A
child that exits later, while the supervisor is not stopping, has crashed: it is started
again after a backoff (0.5 s doubling to 10 s, back to 0.5 s once it had served for a
minute). The first SIGINT/SIGTERM to the supervisor is passed on to every child (each is
in a process group of its own, so a terminal's Ctrl-C reaches only the supervisor), and
they stop gracefully: answer the calls in flight, drain, commit. The supervisor returns
once all have exited; a second signal kills them. A child whose supervisor dies (even by
SIGKILL) gets SIGTERM from the kernel and stops the same way. Each child's server is
made to share the port (``reuse_port`` is set on it).

``build`` runs in the child, which is started with ``spawn``: it must be picklable (a
module-level function, or a ``functools.partial`` of one). :func:`server_index` tells it
which child it is (0 to ``processes - 1``, kept across restarts): say, only child 0 runs
the pipeline's start-up loading. Children do not configure
logging: ``build`` may (their ``asyncpipe`` loggers are otherwise silent below WARNING).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import logging
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from .._runner import install_signal_handlers, run
from .._tasks import first_done
from ._server import IngestServer, serve

__all__ = ["serve_processes", "server_index"]

logger = logging.getLogger(__name__)

_BACKOFF = 0.5
_MAX_BACKOFF = 10.0
_HEALTHY_AFTER = 60.0  # seconds of serving that reset a child's backoff
_PR_SET_PDEATHSIG = 1
_index: int | None = None  # this process's index, in a child of serve_processes


def server_index() -> int | None:
    """In a server process of :func:`serve_processes` (its ``build`` included): its index,
    0 to ``processes - 1`` -- a restarted child keeps its index. Elsewhere None."""
    return _index


class ChildState(enum.Enum):
    STARTING = "starting"
    SERVING = "serving"
    EXITED = "exited"


@dataclass
class _Child:
    index: int
    process: BaseProcess
    messages: Connection
    state: ChildState = ChildState.STARTING
    address: str = ""
    served_at: float | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)


def _die_with_parent(parent: int) -> None:
    """Have the kernel send SIGTERM to this process when ``parent`` exits (Linux)."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # it died before the request was in place
        os.kill(os.getpid(), signal.SIGTERM)


def _child_main(
    build: Callable[[int], IngestServer], port: int, parent: int, messages: Connection, index: int
) -> None:
    """A server process: build the server, serve it, say when it is serving."""
    global _index
    _index = index
    # A group of its own: a terminal's Ctrl-C reaches the supervisor alone, which passes
    # it on once (twice would abort).
    os.setpgrp()
    _die_with_parent(parent)

    def ready(server: IngestServer) -> None:
        messages.send(("serving", server.address))

    server = build(port)
    server.reuse_port = True  # the port is shared with the other children
    run(serve(server, on_ready=ready))


def _reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``(host, port)`` with ``SO_REUSEPORT`` and not listening: it keeps
    the port for the children (``port=0``: a free one) and receives no connection."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class _Supervisor:
    def __init__(
        self,
        build: Callable[[int], IngestServer],
        processes: int,
        port: int,
        on_ready: Callable[[list[str]], object] | None,
    ) -> None:
        self.build = build
        self.port = port
        self.on_ready = on_ready
        self.context = multiprocessing.get_context("spawn")
        self.children: list[_Child | None] = [None] * processes
        self.backoff = [_BACKOFF] * processes
        self.stopping = False
        self.announced = False
        self.failure: RuntimeError | None = None
        self.failed = asyncio.Event()

    def start(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=_child_main,
            args=(self.build, self.port, os.getpid(), theirs, index),
            name=f"asyncpipe-server-{index}",
        )
        process.start()
        theirs.close()
        child = _Child(index, process, ours)
        self.children[index] = child
        loop.add_reader(ours.fileno(), self._on_message, child)
        loop.add_reader(process.sentinel, self._on_exit, child)
        logger.info("server process %d: started (pid %s)", index, process.pid)

    def _on_message(self, child: _Child) -> None:
        loop = asyncio.get_running_loop()
        try:
            kind, address = child.messages.recv()
        except (EOFError, OSError):
            loop.remove_reader(child.messages.fileno())
            return
        if kind == "serving":
            child.state, child.address = ChildState.SERVING, address
            child.served_at = loop.time()
            logger.info(
                "server process %d (pid %s): serving on %s", child.index, child.process.pid, address
            )
            self._announce()

    def _on_exit(self, child: _Child) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(child.process.sentinel)
        with contextlib.suppress(OSError, ValueError):
            loop.remove_reader(child.messages.fileno())
        child.messages.close()
        child.process.join()
        served = child.served_at is not None and loop.time() - child.served_at
        child.state = ChildState.EXITED
        child.exited.set()
        code = child.process.exitcode
        if self.stopping:
            logger.info("server process %d: exited (%s)", child.index, code)
        elif not self.announced:  # never all served: a broken build, not a crash
            self.failure = RuntimeError(
                f"server process {child.index} exited (code {code}) before serving: "
                "see its traceback above"
            )
            self.failed.set()
        else:
            if served and served >= _HEALTHY_AFTER:
                self.backoff[child.index] = _BACKOFF
            delay = self.backoff[child.index]
            self.backoff[child.index] = min(delay * 2, _MAX_BACKOFF)
            logger.warning(
                "server process %d exited unexpectedly (code %s): restarting in %.1f s",
                child.index,
                code,
                delay,
            )
            loop.call_later(delay, self._restart, child.index)

    def _restart(self, index: int) -> None:
        if not self.stopping:
            self.start(index)

    def _announce(self) -> None:
        children = [c for c in self.children if c is not None]
        if self.announced or len(children) < len(self.children):
            return
        if all(c.state is ChildState.SERVING for c in children):
            self.announced = True
            if self.on_ready is not None:
                self.on_ready([c.address for c in children])

    def signal_all(self, signum: int) -> None:
        for child in self.children:
            if child is not None and child.state is not ChildState.EXITED:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.process.pid or 0, signum)

    async def wait_all_exited(self) -> None:
        for child in self.children:
            if child is not None:
                await child.exited.wait()


async def serve_processes(
    build: Callable[[int], IngestServer],
    *,
    processes: int,
    host: str = "127.0.0.1",
    port: int = 0,
    handle_signals: bool = True,
    on_ready: Callable[[list[str]], object] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run ``processes`` server processes on ``host:port`` until SIGINT/SIGTERM (or
    ``stop`` is set); see the module docstring. ``build(port)`` makes each child's
    server (on ``port``, which is the one reserved here when ``port`` is 0);
    ``on_ready(addresses)`` is called once every child is serving."""
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    stop = stop or asyncio.Event()
    reserved = _reserve_port(host, port)
    supervisor = _Supervisor(build, processes, reserved.getsockname()[1], on_ready)
    remove = None
    if handle_signals:
        remove = install_signal_handlers(stop.set, lambda: supervisor.signal_all(signal.SIGKILL))
    try:
        for index in range(processes):
            supervisor.start(index)
        await first_done(stop.wait(), supervisor.failed.wait())
        supervisor.stopping = True
        supervisor.signal_all(signal.SIGTERM)
        await supervisor.wait_all_exited()
        if supervisor.failure is not None:
            raise supervisor.failure
    finally:
        supervisor.stopping = True
        supervisor.signal_all(signal.SIGKILL)
        await asyncio.shield(supervisor.wait_all_exited())
        reserved.close()
        if remove is not None:
            remove()
