"""``python -m bench.state_store``: a durable keyed workload over each state store.

200,000 events ``{"k": "k00042", "v": 17}`` over 10,000 keys, submitted in batches of 500
(each with an origin, so each leaves marks) with up to 8 batches in flight, through
``ingest -> KeyedHandler (count and sum per key, workers=2) -> a sink keeping each key's
latest totals`` (checked against a plain loop after every run). Stores: ``memory`` (not
persistent: the baseline without durability), ``sqlite`` (a fresh file per run) and
``postgres`` (a fresh database per run, dropped after it, on ``DATABASE_URL`` or a server
started from the pgserver wheel); ``sqlite-shared`` and ``postgres-shared`` are the same in
shared mode (``shared=True``: what several server processes on one store need -- each
group of messages applied in its node's exclusive section, keys read again, outputs
delivered before the section ends; here one process, so the cost of the mode alone). Runs
alternate the stores' order; the table gives the
median events/s, the range, and each store's ratio to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asyncpipe import HandlerNode, PipelineExecutor
from asyncpipe.state import (
    KeyedHandler,
    MemoryStateStore,
    PostgresStateStore,
    SqliteStateStore,
    StateStore,
)

from .csv_postgres import _server

STORES = ("memory", "sqlite", "sqlite-shared", "postgres", "postgres-shared")
IN_FLIGHT = 8


class Totals(KeyedHandler):
    def initial(self, key: str) -> tuple[int, int]:
        return (0, 0)

    async def update(
        self, key: str, state: tuple[int, int], records: list[dict[str, Any]]
    ) -> tuple[tuple[int, int], list[dict[str, Any]]]:
        n, total = state
        for record in records:
            n, total = n + 1, total + record["v"]
        return (n, total), [{"k": key, "n": n, "sum": total}]


def batches(events: int, keys: int, size: int) -> list[list[dict[str, Any]]]:
    records = [{"k": f"k{i * 7919 % keys:05}", "v": i % 100} for i in range(events)]
    return [records[i : i + size] for i in range(0, events, size)]


Latest = dict[str, tuple[int, int]]


def expected(plan: list[list[dict[str, Any]]]) -> Latest:
    """Each key's (count, sum), by a plain loop."""
    latest: Latest = {}
    for batch in plan:
        for record in batch:
            n, total = latest.get(record["k"], (0, 0))
            latest[record["k"]] = (n + 1, total + record["v"])
    return latest


async def run(store: StateStore, plan: list[list[dict[str, Any]]]) -> tuple[float, Latest]:
    """Seconds to push ``plan`` through the pipeline over ``store`` (receipts resolved),
    and each key's latest totals as the sink saw them."""
    latest: Latest = {}

    def keep(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            latest[row["k"]] = (row["n"], row["sum"])

    ingest = HandlerNode("ingest")
    totals = HandlerNode("totals", Totals(), [ingest], key="k", workers=2)
    sink = HandlerNode("sink", keep, [totals])
    room = asyncio.Semaphore(IN_FLIGHT)

    async def follow(receipt: Any) -> None:
        try:
            await receipt
        finally:
            room.release()

    start = time.perf_counter()
    async with PipelineExecutor([ingest], [totals, sink], state_store=store) as executor:
        async with asyncio.TaskGroup() as group:
            for i, batch in enumerate(plan):
                await room.acquire()
                receipt = await executor.submit("ingest", batch, origin=f"b{i}")
                group.create_task(follow(receipt), name=f"follow:{i}")
    return time.perf_counter() - start, latest


async def _admin(admin_dsn: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def measure(
    kind: str, plan: list[list[dict[str, Any]]], folder: Path, admin_dsn: str
) -> float:
    """Seconds for one run over a fresh store of ``kind``; ``RuntimeError`` if a key's
    totals differ from the plain loop's."""
    shared = kind.endswith("-shared")
    if kind == "memory":
        took, latest = await run(MemoryStateStore(), plan)
    elif kind.startswith("sqlite"):
        path = folder / f"{uuid.uuid4().hex}.db"
        took, latest = await run(SqliteStateStore(path, shared=shared), plan)
    else:
        name = f"bench_{uuid.uuid4().hex[:10]}"
        await _admin(admin_dsn, f'CREATE DATABASE "{name}"')
        head, _, tail = admin_dsn.partition("?")
        dsn = f"{head.rsplit('/', 1)[0]}/{name}" + (f"?{tail}" if tail else "")
        try:
            took, latest = await run(PostgresStateStore(dsn, shared=shared), plan)
        finally:
            await _admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if latest != expected(plan):
        raise RuntimeError(f"{kind}: the totals differ from a plain loop's")
    return took


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.state_store")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    plan = batches(args.events, args.keys, args.batch)
    seconds: dict[str, list[float]] = {kind: [] for kind in STORES}
    with tempfile.TemporaryDirectory(prefix="asyncpipe-bench-state-") as tmp:
        os.chmod(tmp, 0o755)  # the server may run as another user (as root: pgserver's)
        with _server(Path(tmp)) as admin_dsn:
            for repeat in range(args.repeat):
                order = STORES if repeat % 2 == 0 else STORES[::-1]
                for kind in order:
                    took = asyncio.run(measure(kind, plan, Path(tmp), admin_dsn))
                    seconds[kind].append(took)
    base = statistics.median(args.events / s for s in seconds["memory"])
    print(f"{args.events} events, {args.keys} keys, batches of {args.batch}, {args.repeat} runs")
    print(f"{'store':<16}{'events/s (median)':>20}{'range':>22}{'vs memory':>12}")
    for kind in STORES:
        rates = sorted(args.events / s for s in seconds[kind])
        median = statistics.median(rates)
        span = f"{rates[0]:,.0f}-{rates[-1]:,.0f}"
        print(f"{kind:<16}{median:>20,.0f}{span:>22}{median / base:>11.2f}x")


if __name__ == "__main__":
    main()
