"""A state store in an SQLite file (WAL), the default durable store.

It shares the connectors' one-writer-per-file connection (``connectors._sqlite_db``): the
state, a results table written by an :class:`~asyncpipe.connectors.SqliteSink` and the
dead letters may live in one file without ``database is locked`` between them. Every
call is one function run on that connection's thread; a commit is one ``BEGIN
IMMEDIATE`` ... ``COMMIT`` transaction, so it is durable as a whole or not at all.

Tables (created if missing), all keyed by the namespace (a stateful node's name)::

    asyncpipe_state (ns, key BLOB, value BLOB)                  -- PRIMARY KEY (ns, key)
    asyncpipe_marks (ns, name TEXT, at REAL, rejections BLOB, outputs BLOB NULL)
    asyncpipe_meta  (ns, name TEXT, value BLOB)
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

# The connectors' writer: one connection and thread per file, shared with sinks.
from ..connectors._sqlite_db import Database, check_synchronous
from ._memory import DEFAULT_DEDUPE_TTL
from ._shared import FileLocks
from ._store import StateCommit, StoredMark

__all__ = ["SqliteStateStore"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS asyncpipe_state (ns TEXT NOT NULL, key BLOB NOT NULL, "
    "value BLOB NOT NULL, PRIMARY KEY (ns, key)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS asyncpipe_marks (ns TEXT NOT NULL, name TEXT NOT NULL, "
    "at REAL NOT NULL, rejections BLOB NOT NULL, outputs BLOB, PRIMARY KEY (ns, name))",
    "CREATE INDEX IF NOT EXISTS asyncpipe_marks_at ON asyncpipe_marks (ns, at)",
    "CREATE INDEX IF NOT EXISTS asyncpipe_marks_outbox ON asyncpipe_marks (ns) "
    "WHERE outputs IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS asyncpipe_meta (ns TEXT NOT NULL, name TEXT NOT NULL, "
    "value BLOB NOT NULL, PRIMARY KEY (ns, name)) WITHOUT ROWID",
)
_PUT_HEAD = "INSERT INTO asyncpipe_state (ns, key, value) VALUES "
_PUT_TAIL = " ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value"
_DELETE = "DELETE FROM asyncpipe_state WHERE ns = ? AND key IN"
_MARK_HEAD = "INSERT OR IGNORE INTO asyncpipe_marks (ns, name, at, rejections, outputs) VALUES "
_ROWS_PER_STATEMENT = 1000
_DELIVERED = "UPDATE asyncpipe_marks SET outputs = NULL WHERE ns = ? AND name = ?"
_META = (
    "INSERT INTO asyncpipe_meta (ns, name, value) VALUES (?, ?, ?) "
    "ON CONFLICT (ns, name) DO UPDATE SET value = excluded.value"
)
_EXPIRE = "DELETE FROM asyncpipe_marks WHERE ns = ? AND at < ? AND outputs IS NULL"
_CHUNK = 500  # keys or names per SELECT ... IN (...)
_EXPIRE_EVERY = 60.0  # seconds between two purges of expired marks of a namespace


class SqliteStateStore:
    """Keeps stateful nodes' state in an SQLite file (created if missing, WAL mode).

    Args:
        path: the database file; it may be the file the pipeline's sinks write to.
        dedupe_ttl: seconds a delivered mark is kept (a replay of a message older than
            that is applied again). Expired marks are purged every minute or so.
        synchronous: ``"NORMAL"`` (default: a commit survives a crash of the process) or
            ``"FULL"`` (it survives a power loss too; slower).
        busy_timeout: seconds to wait for another process's write lock.
        clock: wall-clock time for expiry (``time.time``).
        shared: several processes run the same stateful nodes on this file (shared mode,
            ``docs/state.md``): each group of messages is applied in an exclusive section
            of its node, an ``flock`` on a file in the directory ``<path>.locks``.
    """

    persistent = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        dedupe_ttl: float = DEFAULT_DEDUPE_TTL,
        synchronous: str = "NORMAL",
        busy_timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
        shared: bool = False,
    ) -> None:
        self.path = path
        self._absolute = os.path.abspath(os.fspath(path))
        self.shared = shared
        self._sections = FileLocks(self._absolute + ".locks")
        self.dedupe_ttl = dedupe_ttl
        self.synchronous = check_synchronous(synchronous)
        self.busy_timeout = busy_timeout
        self._clock = clock
        self._db: Database | None = None
        self._purged: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"<SqliteStateStore {os.fspath(self.path)!r}>"

    @property
    def db(self) -> Database:
        if self._db is None:
            raise RuntimeError(f"{self!r} is not open")
        return self._db

    async def open(self) -> None:
        if self._db is not None:
            return
        db = await Database.acquire(
            self._absolute, busy_timeout=self.busy_timeout, synchronous=self.synchronous
        )
        try:
            await db.run(_create, db)
        except BaseException:
            await db.release()
            raise
        self._db = db

    async def aclose(self) -> None:
        db, self._db = self._db, None
        self._sections.close()
        if db is not None:
            await db.release()

    def exclusive(self, namespace: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Shared mode: the namespace's section, excluding every other process."""
        return self._sections.exclusive(namespace)

    async def load(self, namespace: str, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        db = self.db
        return dict(await db.run(_select, db, "asyncpipe_state", "key", "value", namespace, keys))

    async def scan(self, namespace: str) -> list[tuple[bytes, bytes]]:
        sql = "SELECT key, value FROM asyncpipe_state WHERE ns = ?"
        return [tuple(row) for row in await self.db.fetchall(sql, (namespace,))]

    async def seen(self, namespace: str, names: Sequence[str]) -> dict[str, StoredMark]:
        db = self.db
        rows = await db.run(
            _select, db, "asyncpipe_marks", "name", "rejections, outputs", namespace, names
        )
        return {row[0]: StoredMark(row[1], row[2]) for row in rows}

    async def undelivered(self, namespace: str) -> list[tuple[str, bytes]]:
        sql = (
            "SELECT name, outputs FROM asyncpipe_marks WHERE ns = ? AND outputs IS NOT NULL "
            "ORDER BY rowid"
        )
        return [tuple(row) for row in await self.db.fetchall(sql, (namespace,))]

    async def read_meta(self, namespace: str) -> dict[str, bytes]:
        sql = "SELECT name, value FROM asyncpipe_meta WHERE ns = ?"
        return dict(await self.db.fetchall(sql, (namespace,)))

    async def commit(self, namespace: str, commit: StateCommit) -> None:
        now = self._clock()
        expire_before = None
        if now - self._purged.get(namespace, 0.0) >= _EXPIRE_EVERY:
            self._purged[namespace] = now
            expire_before = now - self.dedupe_ttl
        db = self.db
        await db.run(_commit, db, namespace, commit, now, expire_before)


# -- on the database thread (each function takes the shared Database, uses its conn) ------


def _create(db: Database) -> None:
    conn = db.conn
    for statement in _SCHEMA:
        conn.execute(statement)


def _select(
    db: Database, table: str, column: str, values: str, namespace: str, wanted: Sequence[Any]
) -> list[Any]:
    conn = db.conn
    rows: list[Any] = []
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        sql = f"SELECT {column}, {values} FROM {table} WHERE ns = ? AND {column} IN ({marks})"
        rows.extend(conn.execute(sql, (namespace, *chunk)).fetchall())
    return rows


def _commit(
    db: Database, namespace: str, commit: StateCommit, now: float, expire_before: float | None
) -> None:
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        puts = [(k, v) for k, v in commit.changes if v is not None]
        _rows(db, _PUT_HEAD, "(?, ?, ?)", _PUT_TAIL, namespace, puts)
        if len(puts) < len(commit.changes):
            gone = [k for k, v in commit.changes if v is None]
            for start in range(0, len(gone), _CHUNK):
                chunk = gone[start : start + _CHUNK]
                marks = ", ".join("?" * len(chunk))
                conn.execute(f"{_DELETE} ({marks})", (namespace, *chunk))
        marks_rows = [(name, now, rej, out) for name, rej, out in commit.marks]
        _rows(db, _MARK_HEAD, "(?, ?, ?, ?, ?)", "", namespace, marks_rows)
        if commit.delivered:
            conn.executemany(_DELIVERED, [(namespace, name) for name in commit.delivered])
        if commit.meta:
            conn.executemany(_META, [(namespace, k, v) for k, v in commit.meta.items()])
        if expire_before is not None:
            conn.execute(_EXPIRE, (namespace, expire_before))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _rows(
    db: Database, head: str, row: str, tail: str, namespace: str, rows: list[tuple[Any, ...]]
) -> None:
    """Insert ``rows`` (each prefixed with the namespace) with multi-row statements: one
    statement binds many rows and SQLite runs it without the GIL, where ``executemany``
    would hand the GIL over once per row -- each a wait while the event loop holds it."""
    if not rows:
        return
    width = row.count("?")
    per = max(1, min(_ROWS_PER_STATEMENT, db._max_variables // width))
    conn = db.conn
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        values = [value for r in chunk for value in (namespace, *r)]
        conn.execute(head + ", ".join([row] * len(chunk)) + tail, values)
