"""A million lines stream through a source with flat memory."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
from conn_helpers import TIMEOUT

from asyncpipe import HandlerNode
from asyncpipe.connectors import CsvSource
from asyncpipe.testing import run_pipeline

LINES = 1_000_000
STATM = Path("/proc/self/statm")


def write_big_csv(path: Path) -> int:
    row = b"%d,name %d,%d.5\n"
    with path.open("wb") as file:
        file.write(b"id,name,amount\n")
        for start in range(0, LINES, 100_000):
            file.write(
                b"".join(row % (i, i % 977, i % 1000) for i in range(start, start + 100_000))
            )
    return path.stat().st_size


def resident_bytes() -> int:
    return int(STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class MemoryProbe:
    """A sink counting records and sampling the process's resident memory."""

    def __init__(self) -> None:
        self.records = 0
        self.last: Any = None
        self.peak = resident_bytes()

    def __call__(self, batch: list[Any]) -> None:
        self.records += len(batch)
        self.last = batch[-1]
        self.peak = max(self.peak, resident_bytes())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
async def test_a_million_lines_stream_with_flat_memory(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    size = write_big_csv(path)
    before = resident_bytes()
    probe = MemoryProbe()
    read = HandlerNode("read", CsvSource(path, batch_size=1000))
    sink = HandlerNode("count", probe, [read], capacity=8)
    await run_pipeline([read], [sink], timeout=TIMEOUT * 3)
    assert probe.records == LINES
    assert probe.last == {"id": "999999", "name": "name 528", "amount": "999.5"}
    # The file as dict records would take ~300 MB, ~17x the file itself; streaming holds
    # a chunk of lines and the batches in flight, a few MB.
    growth = probe.peak - before
    assert growth < size, f"resident memory grew by {growth / 1e6:.1f} MB"
