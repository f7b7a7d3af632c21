"""Several server processes on one port (``serve_processes``): batches stored by both, a
crashed child restarted, SIGTERM stopping all, the supervisor's death stopping them."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from pathlib import Path

import pytest
from ingest_helpers import TIMEOUT, rows, transactions
from multi_server import broken_build

from asyncpipe.demo.service import BankClient
from asyncpipe.ingest import serve_processes

SCRIPT = Path(__file__).parent / "multi_server.py"
SERVING = re.compile(r"server process (\d+) \(pid (\d+)\): serving on (\S+)")
SIZE = 100


class Supervisor:
    """``multi_server.py`` in its own process, its log read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.log: list[str] = []

    @classmethod
    async def start(cls, db: Path, processes: int) -> Supervisor:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SCRIPT),
            str(db),
            str(processes),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def serving(self) -> str:
        assert self.proc.stdout is not None
        line = (await self.proc.stdout.readline()).decode()
        assert line.startswith("SERVING "), f"{line!r}\n" + "\n".join(self.log)
        return line.split()[1]

    async def next_serving(self) -> tuple[int, int, str]:
        """The next 'serving' line of the log: (child index, pid, address)."""
        assert self.proc.stderr is not None
        while line := (await self.proc.stderr.readline()).decode():
            self.log.append(line.rstrip())
            if match := SERVING.search(line):
                return int(match[1]), int(match[2]), match[3]
        raise AssertionError("the supervisor ended:\n" + "\n".join(self.log))

    async def finish(self) -> tuple[int, str]:
        _, err = await self.proc.communicate()
        return self.proc.returncode or 0, "\n".join(self.log) + err.decode()

    async def kill(self) -> None:
        """SIGKILL (if still running), reap, close the pipes."""
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.communicate()


async def exited(pid: int) -> None:
    """Returns once process ``pid`` (not necessarily ours) has exited."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(fd, done.set)
    try:
        await done.wait()
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def send(address: str, first_id: int, batches: int) -> list[int]:
    """``batches`` batches, each on a client (connection) of its own, concurrently."""

    async def one(b: int) -> list[int]:
        start = first_id + b * SIZE
        async with BankClient(address, timeout=10, retries=10) as client:
            reply = await client.send_transactions(transactions(SIZE, start), batch_id=str(start))
        assert reply.success, reply.message
        return list(range(start, start + SIZE))

    done = await asyncio.gather(*(one(b) for b in range(batches)))
    return [i for ids in done for i in ids]


async def test_two_processes_share_a_port_restart_a_crashed_one_and_stop_together(
    tmp_path: Path,
) -> None:
    db = tmp_path / "bank.db"
    supervisor = await Supervisor.start(db, 2)
    try:
        async with asyncio.timeout(TIMEOUT * 3):
            children = dict([(await supervisor.next_serving())[:2] for _ in range(2)])
            address = await supervisor.serving()
            assert len(set(children.values())) == 2
            acknowledged = await send(address, 1, 12)

            os.kill(children[0], signal.SIGKILL)  # a crash: child 0 comes back
            index, pid, again = await supervisor.next_serving()
            assert (index, again) == (0, address) and pid != children[0]
            acknowledged += await send(address, 100_001, 12)

            supervisor.proc.send_signal(signal.SIGTERM)
            code, log = await supervisor.finish()
            await asyncio.gather(exited(pid), exited(children[1]))
        assert code == 0, log
        assert "exited unexpectedly" in log
        # Each child knows its index (server_index()); the restarted one kept child 0's.
        for index, child in [(0, children[0]), (1, children[1]), (0, pid)]:
            assert f"child index {index} pid {child}" in log
        stored = [row[0] for row in rows(db, "SELECT id FROM transactions ORDER BY id")]
        assert stored == sorted(acknowledged)
    finally:
        await supervisor.kill()


async def test_children_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    supervisor = await Supervisor.start(tmp_path / "bank.db", 2)
    try:
        async with asyncio.timeout(TIMEOUT * 3):
            pids = [(await supervisor.next_serving())[1] for _ in range(2)]
            await supervisor.serving()
            supervisor.proc.kill()
            await supervisor.finish()
            await asyncio.gather(*(exited(pid) for pid in pids))
    finally:
        await supervisor.kill()


async def test_a_child_that_cannot_start_fails_the_start(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="exited .* before serving"):
        async with asyncio.timeout(TIMEOUT * 3):
            await serve_processes(broken_build, processes=2, handle_signals=False)
