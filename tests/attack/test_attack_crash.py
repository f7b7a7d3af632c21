"""Crashes: SIGKILL mid-load loses nothing acknowledged, and leaves no process behind.

``ATTACK_SOAK=1`` runs the SIGKILL soak longer (more clients, more batches, three kills).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from demoprocess import DemoProcess, alive, await_gone, cmdline, query
from rawclient import (
    BLOCK,
    RawClient,
    Tally,
    expected_row,
    id_block,
    send_timed,
    summary,
    valid_batch,
)

from asyncpipe.demo.v1 import bank_pb2 as pb

pytestmark = pytest.mark.attack

SOAK = os.environ.get("ATTACK_SOAK") == "1"
CLIENTS = 8 if SOAK else 4
BATCHES = 100 if SOAK else 25  # per client: enough load for three kills
SIZE = 200
CALL_TIMEOUT = 10.0  # seconds per attempt
ATTEMPTS = 30  # per batch: every loop of the soak is bounded
GONE_BOUND = 5.0  # seconds a killed server's descendants may take to exit


@dataclass
class Soak:
    """What the clients and the killer share."""

    address: str
    first_id: int
    up: asyncio.Event = field(default_factory=asyncio.Event)  # a server is serving
    progress: asyncio.Event = field(default_factory=asyncio.Event)  # an ack, or a client done
    acked: dict[str, pb.TransactionBatch] = field(default_factory=dict)
    unacked: list[str] = field(default_factory=list)
    acks_this_server: int = 0
    clients_done: int = 0
    tally: Tally = field(default_factory=Tally)
    bad_replies: list[str] = field(default_factory=list)

    async def client(self, index: int) -> None:
        """Send this client's batches in turn; a batch not acknowledged is sent again
        (same batch_id) once a server serves, up to ATTEMPTS times."""
        try:
            async with RawClient(self.address) as raw:
                for n in range(BATCHES):
                    first = self.first_id + (index * BATCHES + n) * SIZE
                    batch = valid_batch(f"soak-{index}-{n}", first, SIZE)
                    await self._deliver(raw, batch)
        finally:
            self.clients_done += 1
            self.progress.set()

    async def _deliver(self, raw: RawClient, batch: pb.TransactionBatch) -> None:
        for _ in range(ATTEMPTS):
            await self.up.wait()
            status, reply, _ = await send_timed(raw, batch, CALL_TIMEOUT, wait_for_ready=True)
            self.tally.note(status)
            if reply is not None and reply.success:
                if reply.items_processed != SIZE or reply.batch_id != batch.batch_id:
                    self.bad_replies.append(str(reply))
                self.acked[batch.batch_id] = batch
                self.acks_this_server += 1
                self.progress.set()
                return
            if reply is not None:  # success false on valid items: a refusal must say why
                self.bad_replies.append(f"{batch.batch_id}: {reply.message}")
        self.unacked.append(batch.batch_id)

    async def acks_reach(self, target: int) -> bool:
        """Wait until this server acknowledged ``target`` batches (False: all done first)."""
        while self.acks_this_server < target and self.clients_done < CLIENTS:
            self.progress.clear()
            await self.progress.wait()
        return self.acks_this_server >= target


def check_stored(db: Path, soak: Soak, sent_ids: set[int]) -> dict[str, Any]:
    """Compare the transactions table with what was acknowledged."""
    last = soak.first_id + BLOCK - 1
    rows = query(
        db,
        "SELECT id, client_id, date, amount, currency, description, category "
        "FROM transactions WHERE id BETWEEN ? AND ?",
        soak.first_id,
        last,
    )
    counts = Counter(row[0] for row in rows)
    stored = {row[0]: row for row in rows}
    acked = {tx.id: tx for batch in soak.acked.values() for tx in batch.transactions}
    mismatched = []
    for tx_id, tx in acked.items():
        row = stored.get(tx_id)
        want = expected_row(tx)
        if row is not None and (row[:6] != want[:6] or (want[6] is not None and row[6] != want[6])):
            mismatched.append((row, want))
    return {
        "acknowledged_batches": len(soak.acked),
        "acknowledged_items": len(acked),
        "lost": len(set(acked) - set(stored)),
        "duplicated": sum(n - 1 for n in counts.values()),
        "mismatched": len(mismatched),
        "first_mismatch": mismatched[:1],
        "stored_not_sent": len(set(stored) - sent_ids),
        "unacknowledged_batches": len(soak.unacked),
    }


@pytest.mark.timeout(400 if SOAK else 150)
async def test_sigkill_mid_load_loses_nothing_acknowledged_and_duplicates_nothing(
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "demo"
    rng = random.Random()
    kills = 3 if SOAK else rng.choice((2, 3))
    server = DemoProcess(workdir)
    servers = [server]
    figures: dict[str, Any] = {"kills": kills, "clients": CLIENTS, "batches": CLIENTS * BATCHES}
    try:
        soak = Soak(await server.ready(), id_block())
        soak.up.set()
        orphans: list[int] = []
        restarts: list[float] = []
        async with asyncio.timeout(360 if SOAK else 130):
            async with asyncio.TaskGroup() as clients:  # the clients end with the load
                for c in range(CLIENTS):
                    clients.create_task(soak.client(c), name=f"soak-client-{c}")
                for generation in range(1, kills + 1):
                    if not await soak.acks_reach(rng.randint(2, 2 + CLIENTS)):
                        break  # every batch acknowledged before this kill: nothing to cut
                    # A random instant after those acks, so the kill lands anywhere in the
                    # handling of the batches in flight (not a wait for work).
                    await asyncio.sleep(rng.uniform(0.0, 0.3))
                    below = server.descendants()
                    soak.up.clear()
                    await server.kill()
                    started = time.monotonic()
                    server = DemoProcess(workdir, server.port, generation)
                    servers.append(server)
                    await server.ready()
                    restarts.append(round(time.monotonic() - started, 2))
                    orphans.extend(alive(below))
                    soak.acks_this_server = 0
                    soak.up.set()
            code, seconds = await server.terminate()
        sent_ids = {soak.first_id + i for i in range(CLIENTS * BATCHES * SIZE)}
        figures.update(
            kills_done=len(servers) - 1,
            restart_seconds=restarts,
            drain_exit=code,
            drain_seconds=round(seconds, 2),
            orphans_after_restart=len(orphans),
            answers_by_status=dict(soak.tally.statuses),
            **check_stored(server.results, soak, sent_ids),
        )
        (tmp_path / "figures.json").write_text(json.dumps(figures, indent=2, default=str))
        print(f"\nSIGKILL soak figures ({tmp_path / 'figures.json'}):\n{summary(figures)}")  # noqa: T201
        assert figures["kills_done"] >= 2, "the load ended before two kills"
        assert code == 0, f"drain exit {code}:\n{server.log()[-3000:]}"
        assert not soak.bad_replies, soak.bad_replies[:3]
        assert figures["unacknowledged_batches"] == 0, soak.unacked
        assert figures["lost"] == 0 and figures["duplicated"] == 0, figures
        assert figures["mismatched"] == 0, figures["first_mismatch"]
        assert figures["stored_not_sent"] == 0, figures
    finally:
        for each in servers:
            each.cleanup()


@pytest.mark.timeout(90)
async def test_sigkill_leaves_no_descendant_process(tmp_path: Path) -> None:
    # The risk model in the process pool (the demo runs it on the event loop by default):
    # worker processes for the SIGKILL to orphan.
    server = DemoProcess(tmp_path / "demo", extra=("--risk-in-pool",))
    below: list[tuple[int, str]] = []
    try:
        async with RawClient(await server.ready()) as raw:
            # A batch through the whole pipeline: the pool's workers are up and busy.
            status, reply, _ = await send_timed(raw, valid_batch("warm", id_block()), 20.0)
            assert status == "OK", (status, reply)
        below = server.descendants()
        assert below, "the demo server has no process below it (no pool?)"
        names = {pid: cmdline(pid) for pid, _ in below}
        await server.kill()
        left, seconds = await await_gone(below, GONE_BOUND)
        assert not left, (
            f"{len(left)} of {len(below)} descendants still running {seconds:.1f}s after "
            f"SIGKILL of the server: {[names[pid] for pid in left]}"
        )
    finally:
        server.cleanup()
        for pid in alive(below):  # started by our server: do not leave them to the host
            os.kill(pid, 9)
