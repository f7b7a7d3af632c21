"""The state tests' stores (a pytest plugin, registered in conftest.py).

``persistent_store`` is a factory of persistent stores over one storage -- each call opens
the same state again, as a restarted process would -- once per kind of store: in memory
(one object shared), an SQLite file, a PostgreSQL database (a fresh one from ``pg_dsn``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from asyncpipe.state import MemoryStateStore, PostgresStateStore, SqliteStateStore, StateStore


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def persistent_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., StateStore]:
    """``factory(**options)``: a store over the test's storage (``dedupe_ttl``,
    ``clock``; the memory store is one object, made with the first call's options)."""
    if request.param == "memory":
        made: list[MemoryStateStore] = []

        def memory(**options: Any) -> StateStore:
            if not made:
                made.append(MemoryStateStore(persistent=True, **options))
            return made[0]

        return memory
    if request.param == "sqlite":
        return lambda **options: SqliteStateStore(tmp_path / "state.db", **options)
    dsn: str = request.getfixturevalue("pg_dsn")
    return lambda **options: PostgresStateStore(dsn, **options)
