"""PostgreSQL: :class:`PostgresSource` (a query, through a server-side cursor) and
:class:`PostgresSink` (set-based upserts). Needs the ``[postgres]`` extra (``asyncpg``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._rows import Rows, record_at
from ._batching import DEFAULT_BATCH_SIZE, BatchingSource
from ._postgres_db import Connections, PostgresTable, connect, driver, infer_pg_schema, quote
from ._reject import reject_item
from ._sqlite_db import RecordsRefused
from ._table import TableSink

if TYPE_CHECKING:
    import asyncpg

__all__ = ["PostgresSink", "PostgresSource"]


def _safe_dsn(dsn: str) -> str:
    """The DSN without its password, for messages."""
    head, at, tail = dsn.rpartition("@")
    if not at or "://" not in head:
        return dsn
    scheme, _, user = head.partition("://")
    return f"{scheme}://{user.split(':', 1)[0]}@{tail}"


class PostgresSource(BatchingSource):
    """Run a query on PostgreSQL and emit its rows as lists of up to ``batch_size`` dict
    records, fetched ``batch_size`` at a time through a server-side cursor: memory stays
    constant whatever the size of the result.

    ``parameters`` are bound to ``$1``, ``$2``, ... (never formatted into the SQL). The
    query runs in a read-only ``REPEATABLE READ`` transaction, so it streams one
    consistent snapshot and cannot change the database. Each iteration opens a connection
    of its own and closes it at the end (or when the consumer stops early).
    """

    def __init__(
        self,
        dsn: str,
        query: str,
        parameters: Sequence[Any] = (),
        batch_size: int = DEFAULT_BATCH_SIZE,
        *,
        connect_timeout: float = 30.0,
    ) -> None:
        super().__init__(batch_size)
        if not isinstance(query, str) or not query.strip():
            raise ValueError("PostgresSource: query must be SQL text")
        if isinstance(parameters, str | bytes | Mapping):
            raise TypeError("PostgresSource: parameters must be a sequence (for $1, $2, ...)")
        self.dsn = dsn
        self.query = query
        self.parameters = tuple(parameters)
        self.connect_timeout = connect_timeout

    def __repr__(self) -> str:
        return f"<PostgresSource {_safe_dsn(self.dsn)!r} {self.query!r}>"

    async def _batches(self) -> AsyncGenerator[list[dict[str, Any]], None]:
        conn = await connect(self.dsn, self.connect_timeout)
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                try:
                    cursor = await conn.cursor(self.query, *self.parameters)
                except driver().PostgresError as exc:
                    exc.add_note(f"in query {self.query!r} on {_safe_dsn(self.dsn)}")
                    raise
                while rows := await cursor.fetch(self.batch_size):
                    yield list(map(dict, rows))
        finally:
            await asyncio.shield(conn.close(timeout=5))


class PostgresSink(TableSink):
    """Write dict records to a PostgreSQL table: one transaction per message, committed
    before the handler returns (a receipt resolves only once its rows are in PostgreSQL).

    Args:
        dsn: ``postgresql://user:password@host:port/database`` (or any DSN asyncpg takes).
        table: the table (created if missing); resolved through the ``search_path``.
        key: column(s) identifying a record. With a key every write is an **upsert**
            (``INSERT ... ON CONFLICT (key) DO UPDATE``): writing the same batch twice
            leaves the same rows, so retried and replayed batches create no duplicates.
            Without a key rows are plainly inserted (not idempotent).
        schema: ``{column: PostgreSQL type}``, e.g. ``{"id": "bigint", "name": "text"}``;
            a new table gets these columns and ``PRIMARY KEY (key)``. Without one, the
            columns are the fields of the first batch's records, typed from their first
            non-null values (``int`` bigint, ``float`` double precision, ``str`` text,
            ``bool`` boolean, ``Decimal`` numeric, dates, times, ``bytes``, ``UUID``); an
            existing table is used as it is, with its own column types.
        connect_timeout: seconds to wait for a connection.

    A batch is one ``INSERT ... SELECT FROM unnest(...)`` statement (see
    ``_postgres_db``). A record that is not a mapping, lacks a key column or has a NULL
    key, or that PostgreSQL refuses (a constraint, a value of the wrong type), becomes a
    dead letter naming the table and the reason, and the rest of the batch is committed.
    A record's fields that are not columns are ignored; missing columns are written NULL.
    With a ``schema`` the sink ``accepts_rows``: a :class:`~asyncpipe.Rows` message (what
    ``CsvSource`` emits by default when every consumer accepts rows) is mapped from its
    column order onto the table's by the same rules, and a row of it that becomes a dead
    letter shows as a dict.

    Connections: one per concurrent call, so as many as the node's ``workers`` (give a
    bulk load ``workers=2``: two batches in flight). A lost connection or a server
    restart fails the message with the driver's error; the node's ``retries`` (with
    ``backoff``) then write it again on a new connection -- safe, since the write is an
    upsert -- so give the node retries that outlast a restart.
    """

    def __init__(
        self,
        dsn: str,
        table: str,
        *,
        key: str | Sequence[str] | None = None,
        schema: Mapping[str, str] | None = None,
        connect_timeout: float = 30.0,
    ) -> None:
        self.dsn = dsn
        self._declare(table, key, schema, quote)
        self.connect_timeout = connect_timeout
        self.connections: Connections | None = None
        self._preparing = asyncio.Lock()
        self._table: PostgresTable | None = None

    def __repr__(self) -> str:
        return f"<PostgresSink {_safe_dsn(self.dsn)!r} table={self.table!r} key={self.key}>"

    @property
    def _where(self) -> str:
        return f"PostgresSink(table {self.table!r})"

    async def setup(self) -> None:
        if self.connections is not None:
            return
        driver()  # fail now if asyncpg is missing
        self.connections = Connections(self.dsn, self.connect_timeout)
        if self.schema is not None:
            async with self._preparing:
                await self._prepare(self.schema)

    async def teardown(self) -> None:
        connections, self.connections = self.connections, None
        if connections is not None:
            await connections.close()

    async def handle(self, data: Any) -> None:
        """Upsert the message's records in one committed transaction; return None."""
        if self.connections is None:
            await self.setup()
        records = self._as_records(data)
        if not records:
            return None
        if self._table is None:
            async with self._preparing:
                if self._table is None:
                    await self._prepare(infer_pg_schema(records, self._where))
        table = self._table
        assert table is not None
        try:
            rows = table.rows(records)
            origins = list(range(len(rows)))
        except RecordsRefused:
            if isinstance(records, Rows):  # the dead letters show column names
                records = records.dicts()
            rows, origins = self._rows_one_by_one(table, records)
        kept = table.last_per_key(rows)
        if len(kept) < len(rows):
            rows, origins = [rows[i] for i in kept], [origins[i] for i in kept]
        if rows:
            for position, exc in await self._write(table, rows):
                index = origins[position]
                reason = f"{self._where}: {type(exc).__name__}: {exc}"
                reject_item(record_at(records, index), reason, index=index)
        return None

    async def _write(
        self, table: PostgresTable, rows: list[tuple[Any, ...]]
    ) -> list[tuple[int, Exception]]:
        assert self.connections is not None
        conn = await self.connections.acquire()
        broken = True
        try:
            try:
                await table.write(conn, rows)
                failures: list[tuple[int, Exception]] = []
            except (driver().DataError, driver().IntegrityConstraintViolationError):
                failures = await table.write_apart(conn, rows)
            broken = False
            return failures
        finally:
            self.connections.release(conn, broken=broken)

    def _rows_one_by_one(
        self, table: PostgresTable, records: Sequence[Any]
    ) -> tuple[list[tuple[Any, ...]], list[int]]:
        """The rows of the records that can be rows (rejecting the others), and the
        record index of each row."""
        rows = []
        origins = []
        for index, record in enumerate(records):
            if not isinstance(record, Mapping):
                reason = f"{self._where}: not a dict record ({type(record).__name__})"
                reject_item(record, reason, index=index)
                continue
            missing = [k for k in self.key if record.get(k) is None]
            if missing:
                reason = f"{self._where}: no value for key column(s) {', '.join(missing)}"
                reject_item(record, reason, index=index)
                continue
            rows.append(tuple(record.get(c) for c in table.columns))
            origins.append(index)
        return rows, origins

    # -- the table ---------------------------------------------------------------------

    async def _prepare(self, schema: Mapping[str, str]) -> None:
        """Create or check the table and build the upsert statement."""
        assert self.connections is not None
        self._check_key(list(schema))
        conn = await self.connections.acquire()
        broken = True
        try:
            existing = await _columns(conn, self.table)
            if not existing:
                await conn.execute(self._create_table_sql(schema))
                existing = await _columns(conn, self.table)
            unknown = [c for c in schema if c not in existing]
            if unknown:
                raise ValueError(
                    f"{self._where}: the table has no column(s) {unknown} "
                    f"(it has {list(existing)}); alter the table or declare schema="
                )
            if self.key and not await _has_unique_index(conn, self.table, self.key):
                index = quote(f"{self.table}_{'_'.join(self.key)}_key")
                columns = ", ".join(map(quote, self.key))
                await conn.execute(
                    f"CREATE UNIQUE INDEX IF NOT EXISTS {index} ON {quote(self.table)} ({columns})"
                )
            broken = False
        finally:
            self.connections.release(conn, broken=broken)
        # The table's own types: a value is sent as what its column holds.
        self._table = PostgresTable(self.table, {c: existing[c] for c in schema}, self.key)

    def _create_table_sql(self, schema: Mapping[str, str]) -> str:
        definitions = [f"{quote(column)} {sql_type}" for column, sql_type in schema.items()]
        if self.key:
            definitions.append(f"PRIMARY KEY ({', '.join(map(quote, self.key))})")
        return f"CREATE TABLE IF NOT EXISTS {quote(self.table)} ({', '.join(definitions)})"


async def _columns(conn: asyncpg.Connection, table: str) -> dict[str, str]:
    """The table's columns and their types (empty if there is no such table)."""
    rows = await conn.fetch(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        quote(table),
    )
    return {row[0]: row[1] for row in rows}


async def _has_unique_index(conn: asyncpg.Connection, table: str, key: Sequence[str]) -> bool:
    """Whether a unique index (or primary key) covers exactly the key columns."""
    rows = await conn.fetch(
        "SELECT array_agg(a.attname::text) FROM pg_index i "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indpred IS NULL "
        "GROUP BY i.indexrelid",
        quote(table),
    )
    wanted = set(key)
    return any(set(row[0]) == wanted for row in rows)
