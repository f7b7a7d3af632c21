"""``python -m bench.demo_aggregate [--batches N] [--repeat K]``: what the demo's
aggregator costs per 200-transaction batch, with its state in memory and in SQLite.

The stages ``aggregate`` -> ``totals`` and ``profiles`` of the demo, fed over 1,000 valid
clients, once with a non-persistent :class:`MemoryStateStore` and once with a
:class:`SqliteStateStore` (the demo's), alternately. Two figures per side: a lone batch
(sent when the previous one is acknowledged: latency) and 20 batches in flight
(throughput), each as wall time and CPU time (every thread) per batch.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asyncpipe import HandlerNode, PipelineExecutor
from asyncpipe.demo._aggregate import ClientProfiles, GlobalTotals, ProfileRows, client_key
from asyncpipe.state import MemoryStateStore, SqliteStateStore, StateStore
from asyncpipe.testing import CollectingSink

__all__ = ["main", "measure"]

AS_OF = "2026-11-01"
CLIENTS = 1000
BATCH = 200
IN_FLIGHT = 20


def transactions(batches: int, seed: int = 1) -> list[list[dict[str, Any]]]:
    rng = random.Random(seed)
    return [
        [
            {
                "id": n * BATCH + k,
                "client_id": 1 + rng.randrange(CLIENTS),
                "date": f"2026-10-{1 + rng.randrange(28):02d}",
                "amount": 100.0,
                "currency": "BRL",
                "amount_brl": 100.0,
                "description": "LOJA",
                "category": "Compras",
                "suspicious": 0,
            }
            for k in range(BATCH)
        ]
        for n in range(batches)
    ]


def pipeline(store: StateStore) -> PipelineExecutor:
    ingest = HandlerNode("ingest")
    aggregate = HandlerNode("aggregate", ClientProfiles(AS_OF), [ingest], key=client_key)
    totals = HandlerNode("totals", GlobalTotals(), [aggregate], key=lambda r: 0)
    profiles = HandlerNode("profiles", ProfileRows(), [aggregate])
    return PipelineExecutor(
        [ingest],
        [
            aggregate,
            totals,
            profiles,
            HandlerNode("store_profiles", CollectingSink(), [profiles]),
            HandlerNode("store_metrics", CollectingSink(), [totals]),
        ],
        state_store=store,
    )


async def measure(store: StateStore, batches: int) -> dict[str, float]:
    """Per-batch µs: lone (wall, CPU) and with IN_FLIGHT in flight (wall, CPU)."""
    data = transactions(batches)
    clients = [("client", i, "52998224725", None) for i in range(1, CLIENTS + 1)]
    executor = pipeline(store)
    half = batches // 2
    async with executor:
        await (await executor.submit("ingest", clients, origin="clients"))
        wall, cpu = time.perf_counter(), time.process_time()
        for n in range(half):
            await (await executor.submit("ingest", data[n], origin=f"b{n}"))
        lone = ((time.perf_counter() - wall) / half, (time.process_time() - cpu) / half)
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def one(n: int) -> None:
            async with gate:
                await (await executor.submit("ingest", data[n], origin=f"b{n}"))

        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(n) for n in range(half, batches)))
        rest = batches - half
        busy = ((time.perf_counter() - wall) / rest, (time.process_time() - cpu) / rest)
    return {
        "lone wall": lone[0] * 1e6,
        "lone CPU": lone[1] * 1e6,
        f"{IN_FLIGHT} in flight wall": busy[0] * 1e6,
        f"{IN_FLIGHT} in flight CPU": busy[1] * 1e6,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.demo_aggregate", description=__doc__)
    parser.add_argument("--batches", type=int, default=300, help="batches per side and run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per side (alternating)")
    args = parser.parse_args(argv)
    results: dict[str, list[dict[str, float]]] = {"memory": [], "sqlite": []}
    for run in range(args.repeat):
        order = ["memory", "sqlite"] if run % 2 == 0 else ["sqlite", "memory"]
        for side in order:
            with tempfile.TemporaryDirectory() as tmp:
                store: StateStore = (
                    MemoryStateStore() if side == "memory" else SqliteStateStore(Path(tmp) / "s.db")
                )
                results[side].append(asyncio.run(measure(store, args.batches)))
    print(
        f"demo aggregator, µs per {BATCH}-transaction batch over {CLIENTS} clients (median, range):"
    )
    for side, runs in results.items():
        cells = []
        for figure in runs[0]:
            values = sorted(run[figure] for run in runs)
            cells.append(
                f"{figure} {statistics.median(values):,.0f} ({values[0]:,.0f}–{values[-1]:,.0f})"
            )
        print(f"  {side:7s} " + "; ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
