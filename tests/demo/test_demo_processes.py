"""``python -m asyncpipe.demo --serve --processes 2``: two server processes on one port,
one work directory, fed concurrently with batches touching the same clients (and CPFs,
and the one global totals key) from both; one server process is SIGKILLed mid-run and
restarted by the supervisor, the clients resend what was not acknowledged. The results
must equal the reference over every stored input, each input counted once.

The clients are the generated stub over plain ``grpc.aio`` channels, one per sender: the
kernel spreads the connections over the two processes (``SO_REUSEPORT``); calls wait for
a channel to be ready again (``wait_for_ready``) after a process died under them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest
from demo_helpers import fed_to_the_end, model_for
from test_demo_restarts import (
    CALL_TIMEOUT,
    SCALE,
    Batch,
    Server,
    batches,
    query,
)

from asyncpipe.demo._cli import parse_args
from asyncpipe.demo._pipeline import DemoConfig
from asyncpipe.demo._reference import check_served
from asyncpipe.demo.v1 import bank_pb2_grpc as pb_grpc

SENDERS = 6
ATTEMPTS = 5
#: A channel with a connection of its own (channels to one address otherwise share one).
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


class Supervisor(Server):
    """The demo's supervisor process and its server processes."""

    seconds = 90.0
    serving = re.compile(r"gRPC on (127\.0\.0\.1:\d+) with 2 server processes")

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, 0, "--processes", "2")

    def servers(self) -> list[int]:
        """The pids of the server processes (the supervisor's ``spawn`` children)."""
        pid = self.proc.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return [
            int(child)
            for child in children
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
        ]

    def connections(self, pid: int, port: int) -> int:
        """How many established TCP connections server process ``pid`` holds on ``port``."""
        sockets = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    sockets.add(target[8:-1])
        count = 0
        for table in ("tcp", "tcp6"):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == "01" and int(local.rsplit(":", 1)[1], 16) == port and inode in sockets:
                    count += 1
        return count


class Senders:
    """Senders over channels of their own; acknowledgements counted."""

    def __init__(self) -> None:
        self.acked: dict[str, int] = {}  # batch id -> invalid items
        self.bad_replies: list[str] = []
        self.progress = asyncio.Event()

    async def deliver(self, stub: Any, batch: Batch) -> None:
        """Send ``batch`` until answered with success; the same batch id every time."""
        for _ in range(ATTEMPTS):
            try:
                method = getattr(stub, batch.method)
                reply = await method(batch.request, timeout=CALL_TIMEOUT, wait_for_ready=True)
            except grpc.aio.AioRpcError:
                continue  # its server process died or is stopping: send it again
            if not reply.success or reply.items_rejected != batch.invalid:
                self.bad_replies.append(f"{batch.batch_id}: {reply}")
            self.acked[batch.batch_id] = batch.invalid
            self.progress.set()
            return
        raise AssertionError(f"{batch.batch_id} never acknowledged")

    async def send(self, address: str, sender: int) -> None:
        """One sender's batches, over two connections in turn (so 2 x SENDERS connections
        for the kernel to spread), then three of them again (replies lost on the way)."""
        async with (
            grpc.aio.insecure_channel(address, options=OWN_CONNECTION) as one,
            grpc.aio.insecure_channel(address, options=OWN_CONNECTION) as two,
        ):
            stubs = [pb_grpc.IngestionServiceStub(one), pb_grpc.IngestionServiceStub(two)]
            for n, batch in enumerate(batches(sender)):
                await self.deliver(stubs[n % 2], batch)
            for n, batch in enumerate(random.Random(sender).sample(batches(sender), 3)):
                await self.deliver(stubs[n % 2], batch)

    async def acks_reach(self, target: int) -> None:
        while len(self.acked) < target:
            self.progress.clear()
            await self.progress.wait()


@pytest.mark.timeout(180)
async def test_two_server_processes_one_killed_count_everything_once(tmp_path: Path) -> None:
    config = DemoConfig(workdir=tmp_path, scale=SCALE, serve=True)
    supervisor = Supervisor(tmp_path)
    senders = Senders()
    total = sum(len(batches(sender)) for sender in range(SENDERS))
    try:
        async with asyncio.timeout(170):
            address = await supervisor.address()
            first = supervisor.servers()
            assert len(first) == 2
            async with asyncio.TaskGroup() as group:
                for sender in range(SENDERS):
                    group.create_task(senders.send(address, sender), name=f"sender-{sender}")
                await senders.acks_reach(total // 3)
                # Both processes serve some of the connections (the test's premise; with
                # 12 connections, all on one has a chance of 1 in 2048).
                port = int(address.rsplit(":", 1)[1])
                spread = [supervisor.connections(pid, port) for pid in first]
                assert 0 not in spread and sum(spread) == 2 * SENDERS, spread
                os.kill(random.choice(first), signal.SIGKILL)  # mid-run
            restarted = supervisor.servers()
            assert len(restarted) == 2 and len(set(first) & set(restarted)) == 1
            await fed_to_the_end(config)
            assert await supervisor.end(signal.SIGTERM) == 0, supervisor.log.read_text()[-3000:]
        assert not senders.bad_replies, senders.bad_replies[:3]
        assert len(senders.acked) == total
        grpc_nodes = Counter(
            dict(
                query(
                    config.results,
                    "SELECT node, count(*) FROM dead_letters WHERE origin LIKE 'grpc:%' "
                    "GROUP BY node",
                )
            )
        )
        assert sum(grpc_nodes.values()) == sum(senders.acked.values())  # each refused once
        assert check_served(config, model_for(SCALE), sent_dead_letters=grpc_nodes) == []
        stored = query(config.results, "SELECT count(*) FROM transactions")[0][0]
        counted = query(config.results, "SELECT value FROM metrics WHERE name = 'transactions'")
        assert counted == [(str(stored),)]  # every stored transaction counted, once
    finally:
        supervisor.cleanup()


def test_processes_need_serve_and_no_metrics_port() -> None:
    assert parse_args(["--serve", "--processes", "2"]).processes == 2
    for argv in (["--processes", "2"], ["--serve", "--processes", "2", "--metrics-port", "0"]):
        with pytest.raises(SystemExit):
            parse_args(argv)
