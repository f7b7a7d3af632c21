"""``python -m loadtest``: the sweep end to end, against its own server or a given one."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from asyncpipe import HandlerNode, PipelineExecutor
from asyncpipe.connectors import SqliteSink
from asyncpipe.demo.service import bank_server
from asyncpipe.ingest import IngestServer
from loadtest.__main__ import main

LEVEL_FIELDS = {
    "clients",
    "requests",
    "ok",
    "errors",
    "warmup_errors",
    "items_sent",
    "items_acknowledged",
    "seconds",
    "items_per_second",
    "rtt_ms",
    "server_ms",
    "seed_mean_rtt_ms",
}


def report(out: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((out / "results.json").read_text())
    return result


async def test_quick_sweep_starts_the_demo_server_and_checks_integrity(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadtest",
        "--quick",
        "--clients",
        "1,3",
        "--out",
        str(out),
        "--workdir",
        str(tmp_path / "demo"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 50)
    assert proc.returncode == 0, stderr.decode()[-3000:]
    result = report(out)
    assert [level["clients"] for level in result["levels"]] == [1, 3]
    for level in result["levels"]:
        assert set(level) == LEVEL_FIELDS
        assert level["ok"] > 0 and level["errors"] == {}
        assert level["rtt_ms"]["p50"] > 0 and level["items_per_second"] > 0
    integrity = result["integrity"]
    assert integrity["checked"] and integrity["ok"]
    assert (integrity["lost"], integrity["duplicated"]) == (0, 0)
    assert integrity["acknowledged"] >= sum(lv["items_acknowledged"] for lv in result["levels"])
    png = (out / "rtt.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert (out / "levels.csv").read_text().count("\n") == 3
    assert "original mean" in stdout.decode()


class Counting:
    """A pass-through stage that sets ``reached`` once ``after`` batches went through."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.seen = 0
        self.reached = asyncio.Event()

    def __call__(self, batch: Any) -> Any:
        self.seen += 1
        if self.seen >= self.after:
            self.reached.set()
        return batch


SCHEMA = {
    "id": "INTEGER",
    "client_id": "INTEGER",
    "date": "TEXT",
    "amount": "REAL",
    "currency": "TEXT",
    "description": "TEXT",
    "category": "TEXT",
}


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[IngestServer, Counting, Path]]:
    db = tmp_path / "target.db"
    counting = Counting(after=15)
    ingress = HandlerNode("transactions")
    stage = HandlerNode("count", counting, [ingress])
    store = HandlerNode("store", SqliteSink(db, "transactions", key="id", schema=SCHEMA), [stage])
    async with PipelineExecutor([ingress], [stage, store]) as executor:
        server = bank_server(executor, transactions="transactions")
        await server.start()
        try:
            yield server, counting, db
        finally:
            await server.stop(grace=1)


async def test_target_a_running_server(
    served: tuple[IngestServer, Counting, Path], tmp_path: Path
) -> None:
    server, _, db = served
    out = tmp_path / "out"
    args = [
        "--target",
        server.address,
        "--results-db",
        str(db),
        "--clients",
        "2",
        "--duration",
        "1",
        "--warmup",
        "0.2",
        "--batch-size",
        "50",
        "--out",
        str(out),
    ]
    assert await asyncio.wait_for(asyncio.to_thread(main, args), 30) == 0
    [level] = report(out)["levels"]
    assert level["ok"] == level["requests"] > 0
    integrity = report(out)["integrity"]
    assert integrity["ok"] and integrity["acknowledged"] > 0
    conn = sqlite3.connect(db)
    stored = conn.execute("SELECT count(*) FROM transactions").fetchone()[0]
    conn.close()
    assert stored == integrity["acknowledged"] + integrity["unacknowledged_stored"]


async def test_a_server_stopped_mid_level_shows_as_errors(
    served: tuple[IngestServer, Counting, Path], tmp_path: Path
) -> None:
    server, counting, db = served
    out = tmp_path / "out"
    args = [
        "--target",
        server.address,
        "--results-db",
        str(db),
        "--clients",
        "2",
        "--duration",
        "2",
        "--warmup",
        "0",
        "--batch-size",
        "20",
        "--timeout",
        "2",
        "--out",
        str(out),
    ]
    sweep = asyncio.create_task(asyncio.to_thread(main, args))
    await asyncio.wait_for(counting.reached.wait(), 20)
    await server.stop(grace=0)
    assert await asyncio.wait_for(sweep, 30) == 0  # integrity holds: nothing acknowledged lost
    [level] = report(out)["levels"]
    assert level["ok"] > 0
    assert sum(level["errors"].values()) > 0
    assert set(level["errors"]) <= {"UNAVAILABLE", "CANCELLED", "DEADLINE_EXCEEDED"}
    assert level["requests"] == level["ok"] + sum(level["errors"].values())


def test_the_report_uses_asyncpipes_one_percentile() -> None:
    from asyncpipe import _metrics
    from loadtest import _report

    assert vars(_report)["percentile"] is _metrics.percentile
