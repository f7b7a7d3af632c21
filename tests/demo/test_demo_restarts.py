"""``python -m asyncpipe.demo --serve`` killed and restarted under load keeps everything it
acknowledged, in every table, each input counted once.

The client is the generated stub over a plain ``grpc.aio`` channel (no IngestClient, no
BankClient: their retries would hide what the server answers). Senders deliver batches of
clients, scores and transactions (a few invalid items among them); the server is SIGKILLed
at random points twice and stopped with SIGTERM once, and started again on the same work
directory each time; a batch without a success reply is sent again with the same batch
id, and a few acknowledged ones are sent again too (a reply lost on the way). At the end
the results database must equal the reference over every input it stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from demo_helpers import AS_OF, fed_to_the_end, model_for

from asyncpipe.demo._data import Scale
from asyncpipe.demo._pipeline import DemoConfig
from asyncpipe.demo._reference import check_served
from asyncpipe.demo.v1 import bank_pb2 as pb
from asyncpipe.demo.v1 import bank_pb2_grpc as pb_grpc

SCALE = Scale(seed=11, clients=200, transactions=1000, new=300, as_of=AS_OF)
ARGS = [
    "--clients",
    "200",
    "--transactions",
    "1000",
    "--new",
    "300",
    "--seed",
    "11",
    "--workers",
    "1",
]
SENDERS = 3
BATCHES = 24  # per sender
CALL_TIMEOUT = 10.0
ATTEMPTS = 20
FIRST_ID = 5_000_000_000  # far above the demo's own ids
NEW_CLIENT = 900_000  # ids of the clients sent over gRPC
CPFS = ("52998224725", "11144477735", "39053344705", "12345678909")


class Server:
    """One run of the demo server on the work directory."""

    #: Seconds to start serving, and to stop.
    seconds = 60.0
    #: The line saying it serves, with its address.
    serving = re.compile(r"gRPC on (127\.0\.0\.1:\d+)")

    def __init__(self, workdir: Path, generation: int, *extra: str) -> None:
        self.log = workdir / f"server-{generation}.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "asyncpipe.demo", "--serve", "--quiet", *extra]
                + ["--host", "127.0.0.1", "--port", "0", "--workdir", str(workdir)]
                + [*ARGS, "--as-of", AS_OF],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, "COLUMNS": "200"},
            )

    async def address(self) -> str:
        assert self.proc.stdout is not None
        async with asyncio.timeout(self.seconds):
            while True:
                line = await asyncio.to_thread(self.proc.stdout.readline)
                if not line:
                    raise RuntimeError(f"the demo exited:\n{self.log.read_text()[-3000:]}")
                found = self.serving.search(line)
                if found:
                    return found.group(1)

    async def end(self, how: signal.Signals) -> int:
        self.proc.send_signal(how)
        code = await asyncio.to_thread(self.proc.wait, self.seconds)
        await asyncio.to_thread(self.proc.communicate)
        return code

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.communicate(timeout=10)


@dataclass(frozen=True)
class Batch:
    method: str  # the stub's method
    request: Any
    invalid: int  # items the server must refuse

    @property
    def batch_id(self) -> str:
        return str(self.request.batch_id)


def batches(sender: int) -> list[Batch]:
    """One sender's batches: its new clients first, then transactions (of its clients and
    of the generated ones, a few with an unknown currency) and scores."""
    rng = random.Random(sender)
    ids = [NEW_CLIENT + sender * 100 + i for i in range(8)]
    clients = pb.ClientBatch(batch_id=f"c{sender}")
    for i, client_id in enumerate(ids):
        clients.clients.add(
            id=client_id, name="Ana", cpf=CPFS[i % 4], birth_date="1990-01-01", address="Rua A"
        )
    out = [Batch("IngestClients", clients, 0)]
    for n in range(BATCHES):
        if n % 8 == 5:
            scores = pb.ScoreBatch(batch_id=f"s{sender}-{n}")
            for cpf in CPFS:
                scores.scores.add(
                    cpf=cpf, score=rng.randrange(300, 900), monthly_income=4e3, updated_at=AS_OF
                )
            out.append(Batch("IngestScores", scores, 0))
            continue
        txs = pb.TransactionBatch(batch_id=f"t{sender}-{n}")
        first = FIRST_ID + (sender * BATCHES + n) * 100
        invalid = 0
        for k in range(40):
            bad = k == 7 and n % 3 == 0
            invalid += bad
            txs.transactions.add(
                id=first + k,
                client_id=rng.choice(ids) if k % 2 else rng.randrange(1, 201),
                date=f"2026-10-{rng.randrange(1, 32):02d}",
                amount=round(rng.uniform(1, 3000), 2),
                currency="XYZ" if bad else rng.choice(("BRL", "USD", "EUR")),
                description=rng.choice(("SALARIO ACME", "UBER SUL", "LOJA X", "PIX ANA")),
            )
        out.append(Batch("IngestTransactions", txs, invalid))
    return out


@dataclass
class Load:
    """What the senders and the operator (kills, restarts) share."""

    stub: Any = None  # the generated IngestionServiceStub on the current server
    up: asyncio.Event = field(default_factory=asyncio.Event)
    acks: int = 0
    acked: dict[str, int] = field(default_factory=dict)  # batch id -> invalid items
    progress: asyncio.Event = field(default_factory=asyncio.Event)
    bad_replies: list[str] = field(default_factory=list)

    async def sender(self, index: int) -> None:
        for batch in batches(index):
            await self.deliver(batch)

    async def deliver(self, batch: Batch) -> None:
        """Send ``batch`` until a server answers it; the same batch id every time."""
        for _ in range(ATTEMPTS):
            await self.up.wait()
            try:
                method = getattr(self.stub, batch.method)
                reply = await method(batch.request, timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError:
                continue  # the server died or is stopping: send it again
            if not reply.success or reply.items_rejected != batch.invalid:
                self.bad_replies.append(f"{batch.batch_id}: {reply}")
            self.acked[batch.batch_id] = batch.invalid
            self.acks += 1
            self.progress.set()
            return
        raise AssertionError(f"{batch.batch_id} never acknowledged")

    async def acks_reach(self, target: int) -> None:
        while self.acks < target:
            self.progress.clear()
            await self.progress.wait()


@contextlib.asynccontextmanager
async def channel(address: str) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(address) as chan:
        yield pb_grpc.IngestionServiceStub(chan)


def query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.mark.timeout(150)
async def test_kills_and_restarts_keep_everything_acknowledged_counted_once(
    tmp_path: Path,
) -> None:
    rng = random.Random()
    ends = [signal.SIGKILL, signal.SIGKILL, signal.SIGTERM]
    rng.shuffle(ends)
    config = DemoConfig(workdir=tmp_path, scale=SCALE, serve=True)
    servers = [Server(tmp_path, 0)]
    load = Load()
    total = SENDERS * (1 + BATCHES)
    try:
        async with asyncio.timeout(140), contextlib.AsyncExitStack() as stack:
            load.stub = await stack.enter_async_context(channel(await servers[-1].address()))
            load.up.set()
            async with asyncio.TaskGroup() as group:
                for index in range(SENDERS):
                    group.create_task(load.sender(index), name=f"sender-{index}")
                for generation, how in enumerate(ends, 1):
                    await load.acks_reach(total * generation // (len(ends) + 1))
                    # A random instant in the handling of the batches in flight.
                    await asyncio.sleep(rng.uniform(0.0, 0.15))
                    load.up.clear()
                    code = await servers[-1].end(how)
                    assert how is signal.SIGKILL or code == 0, servers[-1].log.read_text()
                    servers.append(Server(tmp_path, generation))
                    stub = await stack.enter_async_context(channel(await servers[-1].address()))
                    load.stub = stub
                    load.up.set()
            # Replies lost on the way: acknowledged batches sent again, same batch ids.
            for sender in range(SENDERS):
                for batch in rng.sample(batches(sender), 3):
                    await load.deliver(batch)
            await fed_to_the_end(config)
            assert await servers[-1].end(signal.SIGTERM) == 0, servers[-1].log.read_text()
        assert not load.bad_replies, load.bad_replies[:3]
        assert len(load.acked) == total
        sent_invalid = sum(load.acked.values())
        refused = query(
            config.results, "SELECT count(*) FROM dead_letters WHERE origin LIKE 'grpc:%'"
        )
        assert refused == [(sent_invalid,)]  # each refused once, though sent several times
        grpc_nodes = Counter(
            dict(
                query(
                    config.results,
                    "SELECT node, count(*) FROM dead_letters WHERE origin LIKE 'grpc:%' "
                    "GROUP BY node",
                )
            )
        )
        assert check_served(config, model_for(SCALE), sent_dead_letters=grpc_nodes) == []
        stored = query(config.results, "SELECT count(*) FROM transactions")[0][0]
        counted = query(config.results, "SELECT value FROM metrics WHERE name = 'transactions'")
        assert counted == [(str(stored),)]  # every stored transaction counted, once
    finally:
        for server in servers:
            server.cleanup()
