"""Where the demo's results live: SQLite files in ``out/`` (the default) or PostgreSQL.

``--database`` picks one :class:`ResultsDatabase`; the pipeline takes its sinks, its
dead-letter sink and its state store from it, and ``--verify``, ``--check``, the live
table and the summary read the results back through it. The inputs the demo generates
(``input/bank.db``, the inbox's files) and the markers of what was fed (``out/.fed-*``,
``out/.inbox-manifest-*``) stay files in the work directory either way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from ..connectors import (
    PostgresDeadLetterSink,
    PostgresSink,
    SqliteDeadLetterSink,
    SqliteSink,
)
from ..connectors._postgres import _safe_dsn
from ..state import PostgresStateStore, SqliteStateStore
from ..state._postgres import DROP_SCHEMA

if TYPE_CHECKING:
    import asyncpg

    from .._deadletter import DeadLetterSink
    from ..state._store import StateStore

__all__ = [
    "DEAD_LETTERS",
    "PostgresResults",
    "ResultsDatabase",
    "SqliteResults",
    "open_results",
]

T = TypeVar("T")

#: The dead letters' table, in either database.
DEAD_LETTERS = "dead_letters"

#: The demo's column types (SQLite's names, see ``_pipeline.SCHEMAS``) in PostgreSQL:
#: 64-bit integers and double precision, as SQLite stores them.
_POSTGRES_TYPES = {"INTEGER": "bigint", "REAL": "double precision", "TEXT": "text"}

#: What the durable state store keeps in PostgreSQL (``asyncpipe.state._postgres``).


class ResultsDatabase(Protocol):
    """The results tables, the dead letters and the aggregator's durable state of a work
    directory, and a way to read them back."""

    #: Where they are, for the user (no password).
    label: str

    def sink(self, table: str, key: str, schema: Mapping[str, str]) -> Any:
        """The handler that upserts records into ``table`` on ``key``."""

    #: Whether a table sink's concurrent writes commit in the order their batches arrive
    #: (SQLite: one writer thread commits what waits, in order). Where they do not
    #: (PostgreSQL: one transaction per connection), the sink's node routes rows by key,
    #: so one key's rows are written by one worker, in order: a profile row written after
    #: a newer one would overwrite it.
    commits_in_order: bool

    def dead_letter_sink(self) -> DeadLetterSink:
        """The pipeline's dead-letter sink (table :data:`DEAD_LETTERS`)."""

    def state_store(self, *, dedupe_ttl: float, shared: bool = False) -> StateStore:
        """The aggregator's durable state store; ``shared``: several server processes
        use it at once (docs/processes.md)."""

    def reset(self) -> None:
        """Remove the results, the dead letters and the state: a run starts over."""

    def exists(self) -> bool:
        """Whether a run has written here (the dead letters' table exists)."""

    def rows(self, table: str) -> list[dict[str, Any]]:
        """Every row of ``table``."""

    def counts(self, tables: Iterable[str]) -> dict[str, int]:
        """Rows per table; a table not there yet (or busy) is left out."""


def open_results(database: str, out: Path) -> ResultsDatabase:
    """The results database ``--database`` names: ``sqlite`` (files in ``out``) or a
    ``postgresql://`` (``postgres://``) URL."""
    if database == "sqlite":
        return SqliteResults(out / "results.db", out / "state.db")
    if database.startswith(("postgresql://", "postgres://")):
        return PostgresResults(database)
    raise ValueError(f"--database {database!r}: expected sqlite or a postgresql:// URL")


class SqliteResults:
    """``results.db`` (tables and dead letters) and ``state.db`` (the state store)."""

    def __init__(self, results: Path, state: Path) -> None:
        self.results = results
        self.state = state
        self.label = str(results)

    commits_in_order = True

    def __repr__(self) -> str:
        return f"<SqliteResults {self.label}>"

    def sink(self, table: str, key: str, schema: Mapping[str, str]) -> SqliteSink:
        return SqliteSink(self.results, table, key=key, schema=dict(schema))

    def dead_letter_sink(self) -> SqliteDeadLetterSink:
        return SqliteDeadLetterSink(self.results, table=DEAD_LETTERS)

    def state_store(self, *, dedupe_ttl: float, shared: bool = False) -> SqliteStateStore:
        return SqliteStateStore(self.state, dedupe_ttl=dedupe_ttl, shared=shared)

    def reset(self) -> None:
        for path in (self.results, self.state):
            for suffix in ("", "-wal", "-shm"):
                path.with_name(path.name + suffix).unlink(missing_ok=True)

    def exists(self) -> bool:
        return self.results.exists()

    def rows(self, table: str) -> list[dict[str, Any]]:
        conn = sqlite3.connect(self.results)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in conn.execute(f"SELECT * FROM {table}")]
        finally:
            conn.close()

    def counts(self, tables: Iterable[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        if not self.results.exists():
            return counts
        conn = sqlite3.connect(f"file:{self.results}?mode=ro", uri=True, timeout=0.05)
        try:
            for table in tables:
                with contextlib.suppress(sqlite3.OperationalError):
                    counts[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        finally:
            conn.close()
        return counts


class PostgresResults:
    """Every table in the PostgreSQL database of ``dsn``: the results tables (created by
    the sinks with PostgreSQL's types for the demo's schema), ``dead_letters`` and the
    state store's ``asyncpipe_*`` tables. The demo owns these tables there: a run without
    ``--serve`` drops them first."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.label = _safe_dsn(dsn)

    commits_in_order = False  # one transaction per connection: any order

    def __repr__(self) -> str:
        return f"<PostgresResults {self.label}>"

    def sink(self, table: str, key: str, schema: Mapping[str, str]) -> PostgresSink:
        types = {column: _POSTGRES_TYPES[kind] for column, kind in schema.items()}
        return PostgresSink(self.dsn, table, key=key, schema=types)

    def dead_letter_sink(self) -> PostgresDeadLetterSink:
        return PostgresDeadLetterSink(self.dsn, table=DEAD_LETTERS)

    def state_store(self, *, dedupe_ttl: float, shared: bool = False) -> PostgresStateStore:
        return PostgresStateStore(self.dsn, dedupe_ttl=dedupe_ttl, shared=shared)

    def reset(self) -> None:
        from ._pipeline import SCHEMAS

        tables = ", ".join([*SCHEMAS, DEAD_LETTERS])

        async def drop(conn: asyncpg.Connection) -> None:
            await conn.execute(f"DROP TABLE IF EXISTS {tables}; {DROP_SCHEMA}")

        self._blocking(drop)

    def exists(self) -> bool:
        async def found(conn: asyncpg.Connection) -> bool:
            return bool(await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", DEAD_LETTERS))

        return self._blocking(found)

    def rows(self, table: str) -> list[dict[str, Any]]:
        async def fetch(conn: asyncpg.Connection) -> list[dict[str, Any]]:
            return [dict(row) for row in await conn.fetch(f"SELECT * FROM {table}")]

        return self._blocking(fetch)

    def counts(self, tables: Iterable[str]) -> dict[str, int]:
        names = list(tables)

        async def count(conn: asyncpg.Connection) -> dict[str, int]:
            present = await conn.fetch(
                "SELECT name FROM unnest($1::text[]) AS name WHERE to_regclass(name) IS NOT NULL",
                names,
            )
            return {
                row["name"]: await conn.fetchval(f"SELECT count(*) FROM {row['name']}")
                for row in present
            }

        return self._blocking(count)

    def _blocking(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """``work`` on a connection of its own, from synchronous code: on an event loop
        of its own in a thread of its own (the caller may be on a running loop)."""
        import asyncpg

        async def session() -> T:
            conn = await asyncpg.connect(self.dsn, timeout=30)
            try:
                return await work(conn)
            finally:
                await conn.close()

        with concurrent.futures.ThreadPoolExecutor(1, "demo-postgres") as thread:
            return thread.submit(asyncio.run, session()).result()
