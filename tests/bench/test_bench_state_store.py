"""``python -m bench.state_store``: each store's run ends with the plain loop's totals, on
the test's PostgreSQL (tests/postgres.py) for the PostgreSQL store."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from postgres import PgServer

from bench import state_store


@pytest.mark.parametrize("kind", state_store.STORES)
async def test_each_store_ends_with_the_plain_loops_totals(
    tmp_path: Path, pg_server: PgServer, kind: str
) -> None:
    plan = state_store.batches(3000, 50, 100)
    seconds = await state_store.measure(kind, plan, tmp_path, pg_server.dsn())
    assert seconds > 0
    conn = await asyncpg.connect(pg_server.dsn())
    try:
        left = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE 'bench_%'")
    finally:
        await conn.close()
    assert left == []  # its database dropped


def test_the_plain_loop_counts_every_event() -> None:
    latest = state_store.expected(state_store.batches(1000, 7, 64))
    assert sum(n for n, _ in latest.values()) == 1000 and len(latest) == 7
