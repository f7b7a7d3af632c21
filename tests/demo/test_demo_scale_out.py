"""The demo from SQLite + process pool to PostgreSQL + Dask: ``--database postgresql://…``
and ``--dask``, on a real PostgreSQL server (``pg_dsn``) and a real ``LocalCluster``.

Every way of running it stores the same rows (the same as the reference's), whatever
database holds them and wherever the risk model runs; the served demo answers a gRPC
batch only once it is in PostgreSQL; ``--check`` reads the results back from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from demo_helpers import AS_OF, config_for, fed_to_the_end, model_for, run_demo
from distributed import LocalCluster

from asyncpipe.demo._data import Scale
from asyncpipe.demo._database import DEAD_LETTERS, ResultsDatabase
from asyncpipe.demo._pipeline import SCHEMAS, DemoConfig
from asyncpipe.demo._reference import compare, compute
from asyncpipe.demo.v1 import bank_pb2 as pb
from asyncpipe.demo.v1 import bank_pb2_grpc as pb_grpc

SMALL_ARGS = ["--clients", "200", "--transactions", "1000", "--new", "400", "--as-of", AS_OF]
SCALE = Scale(seed=42, clients=200, transactions=1000, new=400, as_of=AS_OF)


@pytest.fixture(scope="module")
def dask_address() -> Iterator[str]:
    """A LocalCluster of 2 single-threaded worker processes on loopback."""
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
    ) as cluster:
        yield cluster.scheduler_address


def contents(database: ResultsDatabase) -> dict[str, list[tuple[Any, ...]]]:
    """Every results table's rows (columns in name order) and the dead letters' node,
    type, reason and payload, sorted."""
    out = {}
    for table in SCHEMAS:
        rows = database.rows(table)
        out[table] = sorted((tuple(sorted(row.items())) for row in rows), key=repr)
    letters = database.rows(DEAD_LETTERS)
    columns = ("node", "error_type", "error_message", "payload")
    out[DEAD_LETTERS] = sorted((tuple(row[c] for c in columns) for row in letters), key=repr)
    return out


async def test_postgresql_and_dask_store_what_sqlite_and_the_pool_store(
    tmp_path: Path, pg_dsn: str, dask_address: str
) -> None:
    local = config_for(tmp_path, risk_in_pool=True, max_workers=2)
    await run_demo(local)
    expected = compute(local, model_for(local.scale))
    assert compare(local.results_db, expected) == []
    baseline = contents(local.results_db)
    assert all(baseline.values())  # every table has rows, dead letters included
    for database, dask in [
        (pg_dsn, None),  # the risk model on the loop
        ("sqlite", dask_address),
        (pg_dsn, dask_address),
    ]:
        config = dataclasses.replace(local, risk_in_pool=False, database=database, dask=dask)
        await run_demo(config)
        assert compare(config.results_db, expected) == [], (database, dask)
        assert contents(config.results_db) == baseline, (database, dask)
    assert local.results_db.label != config.results_db.label  # not SQLite's file again


def demo(workdir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "asyncpipe.demo", "--workdir", str(workdir), *SMALL_ARGS, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )


async def test_verify_passes_against_postgresql_with_the_risk_model_on_dask(
    tmp_path: Path, pg_dsn: str
) -> None:
    proc = demo(tmp_path, "--database", pg_dsn, "--dask", "local", "--workers", "2", "--verify")
    out, err = await asyncio.to_thread(proc.communicate, timeout=120)
    assert proc.returncode == 0, err
    assert "Dask risk model on the cluster at tcp://127.0.0.1:" in out
    assert "verify: every table equals the reference" in out
    assert not (tmp_path / "out" / "results.db").exists()  # nothing went to SQLite
    conn = await asyncpg.connect(pg_dsn)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM transactions")
        states = await conn.fetchval("SELECT count(DISTINCT ns) FROM asyncpipe_state")
    finally:
        await conn.close()
    assert f"transactions {stored:,}" in out  # the summary counted PostgreSQL's rows
    assert states == 3  # join, aggregate, totals keep their state there


async def test_dask_and_the_pool_are_one_place_for_the_risk_model(tmp_path: Path) -> None:
    proc = demo(tmp_path, "--dask", "local", "--risk-in-pool")
    _, err = await asyncio.to_thread(proc.communicate, timeout=60)
    assert proc.returncode == 2
    assert "--dask and --risk-in-pool" in err


async def served_address(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    async with asyncio.timeout(60):
        while True:
            line = await asyncio.to_thread(proc.stdout.readline)
            assert line, f"the demo ended before serving: {proc.stderr and proc.stderr.read()}"
            found = re.search(r"gRPC on (127\.0\.0\.1:\d+)", line)
            if found:
                return found.group(1)


async def test_served_on_postgresql_a_batch_is_acknowledged_once_in_postgresql(
    tmp_path: Path, pg_dsn: str
) -> None:
    proc = demo(tmp_path, "--serve", "--port", "0", "--quiet", "--database", pg_dsn)
    try:
        address = await served_address(proc)
        batch = pb.TransactionBatch(batch_id="pg-1")
        for n in range(3):
            batch.transactions.add(
                id=8_000_000 + n,
                client_id=1,
                date=AS_OF,
                amount=100.0 + n,
                currency="BRL",
                description="SUPERMERCADO CENTRAL",
            )
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.IngestionServiceStub(channel)
            reply = await stub.IngestTransactions(batch, timeout=30)
        assert reply.success and reply.items_processed == 3, reply
        conn = await asyncpg.connect(pg_dsn)  # answered after the commit: already there
        try:
            rows = await conn.fetch(
                "SELECT id, amount_brl, category FROM transactions WHERE id >= 8000000 ORDER BY id"
            )
        finally:
            await conn.close()
        assert [tuple(row) for row in rows] == [
            (8_000_000 + n, 100.0 + n, "Alimentação") for n in range(3)
        ]
        await fed_to_the_end(DemoConfig(tmp_path, SCALE))  # for --check, below
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.to_thread(proc.communicate, timeout=60)
        assert proc.returncode == 0, err
        assert "results postgresql://" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # Stopped: --check reads the results back from PostgreSQL, the batch included.
    check = demo(tmp_path, "--check", "--database", pg_dsn)
    out, err = await asyncio.to_thread(check.communicate, timeout=60)
    assert check.returncode == 0, out + err
    assert "every table equals the reference over every stored input" in out


def test_a_database_url_other_than_postgresql_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "asyncpipe.demo", "--workdir", str(tmp_path)]
        + ["--database", "mysql://db/x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "expected sqlite or a postgresql:// URL" in done.stderr
