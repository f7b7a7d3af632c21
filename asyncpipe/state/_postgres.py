"""A state store in PostgreSQL (extra ``[postgres]``; ``asyncpg`` is imported on open).

Tables (created if missing), all keyed by the namespace (a stateful node's name)::

    asyncpipe_state (ns, key bytea, value bytea)                   -- PRIMARY KEY (ns, key)
    asyncpipe_marks (ns, name, at, rejections bytea, outputs bytea NULL,
                     seq bigint from a sequence: commit order)     -- PRIMARY KEY (ns, name)
    asyncpipe_meta  (ns, name, value bytea)                        -- PRIMARY KEY (ns, name)

A commit is **one statement** (its parts are data-modifying ``WITH`` queries: the upsert of
the changed keys from ``unnest`` arrays, the delete of the keys set to None, the insert of
the marks, ``ON CONFLICT DO NOTHING``, the delivered marks' outputs set to NULL, the meta
upsert and, about once a minute, the purge of expired delivered marks). PostgreSQL runs a
lone statement as a transaction of its own: the commit is durable as a whole or not at
all, and costs one round trip. The parts never touch the same row: the delivered marks
were committed earlier, the purge only takes marks already delivered, and a commit holds
each key once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..connectors._postgres import _safe_dsn
from ..connectors._postgres_db import Connections, driver
from ._memory import DEFAULT_DEDUPE_TTL
from ._store import StateCommit, StoredMark

if TYPE_CHECKING:
    import asyncpg

__all__ = ["DROP_SCHEMA", "PostgresStateStore"]

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS asyncpipe_state (
    ns text NOT NULL, key bytea NOT NULL, value bytea NOT NULL, PRIMARY KEY (ns, key));
CREATE SEQUENCE IF NOT EXISTS asyncpipe_marks_seq;
CREATE TABLE IF NOT EXISTS asyncpipe_marks (
    ns text NOT NULL, name text NOT NULL, at double precision NOT NULL,
    rejections bytea NOT NULL, outputs bytea,
    seq bigint NOT NULL DEFAULT nextval('asyncpipe_marks_seq'), PRIMARY KEY (ns, name));
CREATE INDEX IF NOT EXISTS asyncpipe_marks_at ON asyncpipe_marks (ns, at);
CREATE INDEX IF NOT EXISTS asyncpipe_marks_outbox ON asyncpipe_marks (ns, seq)
    WHERE outputs IS NOT NULL;
CREATE TABLE IF NOT EXISTS asyncpipe_meta (
    ns text NOT NULL, name text NOT NULL, value bytea NOT NULL, PRIMARY KEY (ns, name));
"""
#: Removes everything the store keeps (its tables and sequence), e.g. to start over.
DROP_SCHEMA = (
    "DROP TABLE IF EXISTS asyncpipe_state, asyncpipe_marks, asyncpipe_meta; "
    "DROP SEQUENCE IF EXISTS asyncpipe_marks_seq"
)
# Two processes opening a fresh database at once: CREATE ... IF NOT EXISTS is not safe
# against a concurrent CREATE (a unique violation on the catalog), so the schema is
# created under a transaction-level advisory lock.
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('asyncpipe_state_schema'))"

_COMMIT = """
WITH puts AS (
    INSERT INTO asyncpipe_state (ns, key, value)
    SELECT $1, k, v FROM unnest($2::bytea[], $3::bytea[]) AS u (k, v)
    ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value
), gone AS (
    DELETE FROM asyncpipe_state WHERE ns = $1 AND key = ANY($4::bytea[])
), marks AS (
    INSERT INTO asyncpipe_marks (ns, name, at, rejections, outputs)
    SELECT $1, n, $5, r, o FROM unnest($6::text[], $7::bytea[], $8::bytea[])
        WITH ORDINALITY AS u (n, r, o, i)
    ORDER BY i
    ON CONFLICT (ns, name) DO NOTHING
), delivered AS (
    UPDATE asyncpipe_marks SET outputs = NULL WHERE ns = $1 AND name = ANY($9::text[])
), meta AS (
    INSERT INTO asyncpipe_meta (ns, name, value)
    SELECT $1, n, v FROM unnest($10::text[], $11::bytea[]) AS u (n, v)
    ON CONFLICT (ns, name) DO UPDATE SET value = excluded.value
), expired AS (
    DELETE FROM asyncpipe_marks
    WHERE $12::double precision IS NOT NULL AND ns = $1 AND at < $12 AND outputs IS NULL
)
SELECT 1
"""
_LOAD = "SELECT key, value FROM asyncpipe_state WHERE ns = $1 AND key = ANY($2::bytea[])"
_SCAN = "SELECT key, value FROM asyncpipe_state WHERE ns = $1"
_SEEN = (
    "SELECT name, rejections, outputs FROM asyncpipe_marks WHERE ns = $1 AND name = ANY($2::text[])"
)
_UNDELIVERED = (
    "SELECT name, outputs FROM asyncpipe_marks WHERE ns = $1 AND outputs IS NOT NULL ORDER BY seq"
)
_META = "SELECT name, value FROM asyncpipe_meta WHERE ns = $1"
_EXPIRE_EVERY = 60.0  # seconds between two purges of expired marks of a namespace
# Shared mode: a namespace's section is a session-level advisory lock (class, object).
_SECTION = "SELECT pg_advisory_lock(hashtext('asyncpipe_state'), hashtext($1))"
_SECTION_END = "SELECT pg_advisory_unlock(hashtext('asyncpipe_state'), hashtext($1))"


class PostgresStateStore:
    """Keeps stateful nodes' state in a PostgreSQL database (tables created if missing).

    Every call runs on a connection of the store's own (at most ``max_connections``, opened
    when first needed: the lanes of the stateful nodes read and commit at the same time).
    A call whose connection is lost -- the server restarted, say -- runs once more on a
    new connection. That is safe for a commit too: it writes values, never increments, so
    a commit PostgreSQL ran before the connection broke, written again, leaves the same
    rows (and if it is still running, the second waits for its row locks). A commit that
    fails otherwise, or twice, is raised: the node's error policy decides (a stateful node
    stops -- its state in memory would be ahead of the store).

    Several processes may share one database: each commit is a transaction, and a
    message committed by one process is a replay for all (a message another process is
    applying at the same moment -- neither has committed it yet -- is applied twice).
    What is **safe**: processes whose stateful nodes have different names, or that
    update disjoint sets of keys of the same node (route each key to one process, as
    ``key=`` routes it to one lane). What is **not**: two processes updating the same key
    of the same node. Nothing is locked between reading a key and committing it, so the
    last commit wins and the other's update is lost; and each process keeps the keys it
    read in its cache, never reading again what another process wrote. A windowed node
    stores its watermark per lane (``watermark:<lane>``), so the same windowed node must
    not run in two processes at once. At start a stateful node sends again every output
    of its node's outbox, including outputs another running process is delivering (the
    sinks' upserts absorb the copies). Run one process per key space; the SQLite store
    shares these rules -- unless the store is in **shared mode** (``shared=True``,
    ``docs/state.md``): then each group of messages of a node is applied in the node's
    exclusive section, a PostgreSQL advisory lock held on a connection of its own, and
    any number of processes may run the same stateful nodes.

    Args:
        dsn: a PostgreSQL connection string (``postgresql://user@host/db``).
        dedupe_ttl: seconds a delivered mark is kept (a replay of a message older than
            that is applied again). Expired marks are purged every minute or so.
        max_connections: connections the store opens at most.
        connect_timeout: seconds to wait for a connection.
        clock: wall-clock time for expiry (``time.time``).
        shared: several processes run the same stateful nodes (shared mode).
    """

    persistent = True

    def __init__(
        self,
        dsn: str,
        *,
        dedupe_ttl: float = DEFAULT_DEDUPE_TTL,
        max_connections: int = 4,
        connect_timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
        shared: bool = False,
    ) -> None:
        if max_connections < 1:
            raise ValueError("PostgresStateStore: max_connections must be >= 1")
        self.dsn = dsn
        self.dedupe_ttl = dedupe_ttl
        self.max_connections = max_connections
        self._clock = clock
        self._connections = Connections(dsn, connect_timeout)
        self._room: asyncio.Semaphore | None = None
        self._purged: dict[str, float] = {}
        self.shared = shared
        self._sections: dict[str, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"<PostgresStateStore {_safe_dsn(self.dsn)!r}>"

    @property
    def connections(self) -> Connections:
        """The store's connections (``opened`` counts those opened so far)."""
        return self._connections

    async def open(self) -> None:
        if self._room is not None:
            return
        driver()  # ImportError naming the extra, before anything else
        room = asyncio.Semaphore(self.max_connections)
        conn = await self._connections.acquire()
        try:
            async with conn.transaction():
                await conn.execute(_LOCK)
                await conn.execute(_SCHEMA)
        except BaseException:
            self._connections.release(conn, broken=True)
            raise
        self._connections.release(conn)
        self._room = room

    async def aclose(self) -> None:
        room, self._room = self._room, None
        if room is not None:
            await self._connections.close()

    @contextlib.asynccontextmanager
    async def exclusive(self, namespace: str) -> AsyncIterator[None]:
        """Shared mode: the namespace's section -- an advisory lock, on a connection
        outside the ``max_connections`` the calls share (a lane waiting for the lock must
        not hold a connection the lane in the section needs). PostgreSQL drops the lock
        with its connection: a process that dies inside the section never leaves it
        locked."""
        section = self._sections.get(namespace)
        if section is None:
            section = self._sections[namespace] = asyncio.Lock()
        async with section:  # the lanes of this process, one at a time
            conn = await self._connections.acquire()
            try:
                await conn.execute(_SECTION, namespace)
            except BaseException:  # cancelled while waiting: the lock is in doubt
                self._connections.release(conn, broken=True)
                raise
            try:
                yield
            finally:
                try:
                    await conn.execute(_SECTION_END, namespace)
                except BaseException:
                    self._connections.release(conn, broken=True)  # closing it unlocks
                    raise
                self._connections.release(conn)

    async def load(self, namespace: str, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        rows = await self._read(_LOAD, namespace, list(keys))
        return {row[0]: row[1] for row in rows}

    async def scan(self, namespace: str) -> list[tuple[bytes, bytes]]:
        return [(row[0], row[1]) for row in await self._read(_SCAN, namespace)]

    async def seen(self, namespace: str, names: Sequence[str]) -> dict[str, StoredMark]:
        rows = await self._read(_SEEN, namespace, list(names))
        return {row[0]: StoredMark(row[1], row[2]) for row in rows}

    async def undelivered(self, namespace: str) -> list[tuple[str, bytes]]:
        return [(row[0], row[1]) for row in await self._read(_UNDELIVERED, namespace)]

    async def read_meta(self, namespace: str) -> dict[str, bytes]:
        return {row[0]: row[1] for row in await self._read(_META, namespace)}

    async def commit(self, namespace: str, commit: StateCommit) -> None:
        now = self._clock()
        expire_before = None
        if now - self._purged.get(namespace, 0.0) >= _EXPIRE_EVERY:
            expire_before = now - self.dedupe_ttl
        puts = [(k, v) for k, v in commit.changes if v is not None]
        gone = [k for k, v in commit.changes if v is None]
        arguments = (
            namespace,
            [k for k, _ in puts],
            [v for _, v in puts],
            gone,
            now,
            [m[0] for m in commit.marks],
            [m[1] for m in commit.marks],
            [m[2] for m in commit.marks],
            list(commit.delivered),
            list(commit.meta),
            list(commit.meta.values()),
            expire_before,
        )
        await self._run(lambda conn: conn.execute(_COMMIT, *arguments))
        if expire_before is not None:
            self._purged[namespace] = now

    async def _read(self, sql: str, *arguments: Any) -> list[Any]:
        rows: list[Any] = await self._run(lambda conn: conn.fetch(sql, *arguments))
        return rows

    async def _run(self, call: Callable[[asyncpg.Connection], Any]) -> Any:
        """``call`` on a connection; once more on a new one if the connection is lost."""
        room = self._room
        if room is None:
            raise RuntimeError(f"{self!r} is not open")
        async with room:
            for attempt in (1, 2):
                conn = await self._connections.acquire()
                try:
                    result = await call(conn)
                except Exception as exc:
                    lost = conn.is_closed() or _is_lost(exc)
                    self._connections.release(conn, broken=lost)
                    if not lost or attempt == 2:
                        raise
                    logger.warning("%r: connection lost (%r), once more on a new one", self, exc)
                    continue
                except BaseException:  # cancelled mid-call: the connection is in doubt
                    self._connections.release(conn, broken=True)
                    raise
                self._connections.release(conn)
                return result
        raise AssertionError("unreachable")  # pragma: no cover


def _is_lost(exc: Exception) -> bool:
    pg = driver()
    lost = (pg.ConnectionDoesNotExistError, pg.InterfaceError, pg.PostgresConnectionError, OSError)
    return isinstance(exc, lost)
