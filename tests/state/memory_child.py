"""Runs N distinct keys through a keyed node with durable state, and prints its resident
memory (VmRSS, KiB) once a tenth of the keys are in and at the end.

Usage: ``python memory_child.py N DB``. Batches of 500 records, each a new key, are
submitted with an origin (so every message also leaves a mark and an outbox entry); the
node counts per key and emits nothing; the cache keeps at most 10,000 keys.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from asyncpipe import HandlerNode, PipelineExecutor
from asyncpipe.state import KeyedHandler, SqliteStateStore

BATCH = 500


class Tally(KeyedHandler):
    cache_size = int(sys.argv[3]) if len(sys.argv) > 3 else 10_000

    def update(self, key: int, state: Any, records: list[Any]) -> tuple[int, None]:
        return (state or 0) + len(records), None


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def main(n: int, db: Path) -> None:
    ingest = HandlerNode("ingest")
    tally = HandlerNode("tally", Tally(), [ingest], key="id")
    executor = PipelineExecutor([ingest], [tally], state_store=SqliteStateStore(db))
    async with executor:
        pending: list[Any] = []
        for start in range(0, n, BATCH):
            batch = [{"id": i} for i in range(start, min(n, start + BATCH))]
            pending.append(await executor.submit("ingest", batch, origin=f"b{start}"))
            if len(pending) >= 8:
                await pending.pop(0)
            if start == n // 10:
                sys.stdout.write(f"early {rss_kib()}\n")
        for receipt in pending:
            await receipt
    sys.stdout.write(f"end {rss_kib()}\n")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), Path(sys.argv[2])))
