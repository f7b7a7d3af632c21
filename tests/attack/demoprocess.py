"""The server under attack: ``python -m asyncpipe.demo --serve`` in its own process.

Started on loopback with a small initial load on a work directory of the test's; it can be
killed (SIGKILL) and started again on the same work directory and port, as an operator
would after a crash. Its results database is ``<workdir>/out/results.db``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

AS_OF = "2026-11-01"
#: A small initial load (data generation and model training still take ~4 s).
SMALL = ["--clients", "200", "--transactions", "1000", "--new", "400", "--as-of", AS_OF]
START_TIMEOUT = 60.0
_ADDRESS = re.compile(r"gRPC on (127\.0\.0\.1:(\d+))")


class DemoProcess:
    """One run of the demo server; :meth:`ready` waits until it serves."""

    def __init__(
        self, workdir: Path, port: int = 0, generation: int = 0, extra: tuple[str, ...] = ()
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"server-{generation}.log"
        self.address = ""
        self.port = port
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "asyncpipe.demo",
                    "--serve",
                    "--quiet",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--workdir",
                    str(workdir),
                    *SMALL,
                    *extra,
                ],
                stdout=subprocess.PIPE,
                stderr=log,  # a file: a pipe nobody reads could fill up and block it
                text=True,
                env={**os.environ, "COLUMNS": "200"},  # rich wraps its lines at 80
            )

    @property
    def results(self) -> Path:
        return self.workdir / "out" / "results.db"

    async def ready(self) -> str:
        """Its address once it prints that it serves (health is SERVING by then)."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(START_TIMEOUT):
            while not self.address:
                line = await asyncio.to_thread(self.proc.stdout.readline)
                if not line:
                    await asyncio.to_thread(self.proc.wait)
                    raise RuntimeError(f"the demo exited before serving:\n{self.log()[-3000:]}")
                found = _ADDRESS.search(line)
                if found:
                    self.address, self.port = found.group(1), int(found.group(2))
        return self.address

    def descendants(self) -> list[tuple[int, str]]:
        """Its descendant processes now, as (pid, start time), from /proc."""
        return descendants(self.proc.pid)

    async def kill(self) -> None:
        """SIGKILL, then reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        await asyncio.to_thread(self.proc.communicate)

    async def terminate(self, timeout: float = 30.0) -> tuple[int | None, float]:
        """SIGTERM; (exit code, seconds to exit) -- code None when it did not exit in
        ``timeout`` (it is then killed)."""
        self.proc.send_signal(signal.SIGTERM)
        return await self.wait(timeout)

    async def wait(self, timeout: float = 30.0) -> tuple[int | None, float]:
        """Wait for it to exit (no signal: a second SIGTERM would abort its drain);
        (exit code, seconds waited) -- code None when it did not exit in ``timeout`` (it is
        then killed)."""
        started = time.monotonic()
        try:
            await asyncio.to_thread(self.proc.communicate, timeout=timeout)
        except subprocess.TimeoutExpired:
            await self.kill()
            return None, time.monotonic() - started
        return self.proc.returncode, time.monotonic() - started

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cleanup(self) -> None:
        """Kill whatever is left (test teardown)."""
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.communicate(timeout=10)


def free_port() -> int:
    """A loopback port free now (for a test that must know it before the server says)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _stat(pid: int) -> tuple[int, str, str] | None:
    """(ppid, state, start time) of ``pid`` from /proc/<pid>/stat, None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], fields[19]  # ppid, state, starttime


def descendants(root: int) -> list[tuple[int, str]]:
    """Every process below ``root`` (walking /proc/*/stat's ppid), as (pid, start time)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _stat(int(entry))
        if stat is not None:
            children.setdefault(stat[0], []).append(int(entry))
            starts[int(entry)] = stat[2]
    found: list[tuple[int, str]] = []
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append((pid, starts[pid]))
        todo.extend(children.get(pid, []))
    return found


def cmdline(pid: int) -> str:
    """The start of ``pid``'s command line, for messages."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace")[:100]


def alive(processes: list[tuple[int, str]]) -> list[int]:
    """Those of ``processes`` still running: same pid and start time, not a zombie."""
    left = []
    for pid, start in processes:
        stat = _stat(pid)
        if stat is not None and stat[2] == start and stat[1] not in ("Z", "X"):
            left.append(pid)
    return left


async def await_gone(processes: list[tuple[int, str]], bound: float) -> tuple[list[int], float]:
    """Wait up to ``bound`` seconds for ``processes`` to exit; (those left, seconds taken).

    These processes are not our children (a SIGKILLed parent's orphans are re-parented),
    so there is no ``wait()``: a pidfd of each becomes readable when it exits.
    """
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    exits: list[asyncio.Future[None]] = []
    fds: list[int] = []
    try:
        for pid, start in processes:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                continue
            fds.append(fd)
            if not alive([(pid, start)]):  # gone, or the pid already reused
                continue
            exited: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, _settle, exited)
            exits.append(exited)
        if exits:
            await asyncio.wait(exits, timeout=bound)
    finally:
        for fd in fds:
            loop.remove_reader(fd)
            os.close(fd)
    return alive(processes), time.monotonic() - started


def _settle(exited: asyncio.Future[None]) -> None:
    if not exited.done():
        exited.set_result(None)


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on a connection of our own (what another process sees)."""
    if not db.exists():
        return []
    conn = sqlite3.connect(db, timeout=30)
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError as error:
        if "no such table" in str(error):
            return []
        raise
    finally:
        conn.close()
