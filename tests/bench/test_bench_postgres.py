"""The CSV -> PostgreSQL workload of ``python -m bench``: every side stores every row, on
the test's PostgreSQL (tests/postgres.py)."""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

import asyncpg
import pytest

from bench import csv_postgres, csv_sqlite


@pytest.mark.parametrize("side", list(csv_postgres.PG_SIDES))
async def test_each_side_upserts_every_row(tmp_path: Path, pg_dsn: str, side: str) -> None:
    csv_path = tmp_path / "t.csv"
    csv_sqlite.write_csv(csv_path, 1234)
    await asyncio.to_thread(csv_postgres._reset, pg_dsn)
    run = await asyncio.to_thread(csv_postgres.PG_SIDES[side], str(csv_path), pg_dsn, 100, False)
    assert run.rows == 1234 and run.seconds > 0
    assert run.peak_kb >= run.start_kb > 0
    conn = await asyncpg.connect(pg_dsn)
    try:
        row = await conn.fetchrow("SELECT sum(id), max(date), pg_typeof(max(amount))::text FROM tx")
    finally:
        await conn.close()
    assert row is not None and tuple(row) == (
        sum(range(1234)),
        datetime.date(2024, 12, 28),
        "double precision",
    )
