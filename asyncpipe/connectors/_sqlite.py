"""SQLite: :class:`SqliteSource` (a query, in chunks) and :class:`SqliteSink` (upserts)."""

from __future__ import annotations

import asyncio
import bisect
import datetime
import os
import sqlite3
import urllib.parse
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from itertools import repeat
from typing import Any

import aiofiles.os
import aiosqlite

from .._handler import Rejection, rejections_into
from .._rows import Rows, record_at
from ._batching import DEFAULT_BATCH_SIZE, BatchingSource
from ._reject import reject_item
from ._sqlite_db import Database, Insert, RecordsRefused, check_synchronous, quote
from ._sqlite_sql import reorderer
from ._table import TableSink

__all__ = ["SqliteSink", "SqliteSource"]


class SqliteSource(BatchingSource):
    """Run a query on an SQLite database and emit its rows as lists of up to
    ``batch_size`` dict records (column name -> value), fetched ``batch_size`` at a time.

    ``parameters`` are bound, never formatted into the SQL: a sequence for ``?``
    placeholders, a mapping for ``:name`` ones. The connection is read-only
    (``mode=ro``), so the query cannot change the database. The query reads one
    consistent snapshot while it streams. Raises ``FileNotFoundError`` if the database does
    not exist, and ``sqlite3`` errors (naming the database) for a bad query.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        query: str,
        parameters: Sequence[Any] | Mapping[str, Any] = (),
        batch_size: int = DEFAULT_BATCH_SIZE,
        *,
        busy_timeout: float = 30.0,
    ) -> None:
        super().__init__(batch_size)
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"SqliteSource({os.fspath(path)!r}): query must be SQL text")
        self.path = path
        self._absolute = os.path.abspath(os.fspath(path))
        self.query = query
        self.parameters = parameters
        self.busy_timeout = busy_timeout

    def __repr__(self) -> str:
        return f"<SqliteSource {os.fspath(self.path)!r} {self.query!r}>"

    async def _batches(self) -> AsyncGenerator[list[dict[str, Any]], None]:
        path = self._absolute
        if not await aiofiles.os.path.isfile(path):
            raise FileNotFoundError(f"SQLite database {os.fspath(self.path)!r} does not exist")
        uri = f"file:{urllib.parse.quote(path)}?mode=ro"
        async with aiosqlite.connect(uri, uri=True, timeout=self.busy_timeout) as conn:
            try:
                cursor = await conn.execute(self.query, self.parameters)
            except aiosqlite.Error as exc:
                exc.add_note(f"in query {self.query!r} on {os.fspath(self.path)!r}")
                raise
            if cursor.description is None:
                raise ValueError(f"{os.fspath(self.path)}: query returns no rows: {self.query!r}")
            names = [column[0] for column in cursor.description]
            while rows := await cursor.fetchmany(self.batch_size):
                yield list(map(dict, map(zip, repeat(names), rows)))


_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "INTEGER"),
    (int, "INTEGER"),
    (float, "REAL"),
    (str, "TEXT"),
    (bytes, "BLOB"),
    (bytearray, "BLOB"),
    (datetime.date, "TEXT"),
)


def _sql_type(value: Any) -> str:
    for python_type, sql_type in _TYPES:
        if isinstance(value, python_type):
            return sql_type
    return ""


class SqliteSink(TableSink):
    """Write dict records to an SQLite table: one transaction per message, committed
    before the handler returns (so a receipt resolves only once its rows are durable).

    Args:
        path: the database file (created if missing; put in WAL mode).
        table: the table (created if missing).
        key: column(s) identifying a record. With a key every write is an **upsert**
            (``INSERT ... ON CONFLICT (key) DO UPDATE``): writing the same batch twice
            leaves the same rows, so retried and replayed batches create no duplicates.
            Without a key rows are plainly inserted (not idempotent).
        schema: ``{column: SQL type}``, e.g. ``{"id": "INTEGER", "name": "TEXT"}``. Without
            one, the columns are the fields of the first batch's records (first-seen
            order) typed from their first non-null values: ``int``/``bool`` INTEGER,
            ``float`` REAL, ``str`` and dates TEXT, ``bytes`` BLOB, anything else untyped.
        synchronous: ``"NORMAL"`` (default; survives a process crash) or ``"FULL"``
            (survives power loss; slower); see ``_sqlite_db``.
        busy_timeout: seconds to wait for another process's write lock.
        group: write the messages waiting for the sink together (see below).

    Messages are lists of records (or one record). A record is a dict, or -- with a ``schema``
    -- a row: a list or tuple of values in the schema's column order (what ``CsvSource(...,
    records="lists")`` emits), written as it is without a lookup per column. With a
    ``schema`` the sink also ``accepts_rows``: a :class:`~asyncpipe.Rows` message (what
    ``CsvSource`` emits by default when every consumer accepts rows) has its rows mapped
    from its own column order onto the table's -- a column the schema lacks is ignored, a
    schema column the rows lack written as NULL, as for dicts -- and a row of it that
    becomes a dead letter shows as a dict. A dict's fields that are not columns are ignored;
    missing columns are written as NULL. A record that is neither, a row of the wrong
    length, a record that lacks a key column or has a NULL key, or that SQLite refuses (a
    constraint, a value it cannot store) becomes a dead letter naming the table and the
    reason, and the rest of the batch is committed. Database errors (disk full, locked past
    the timeout) fail the whole message, which the node's ``retries``/``on_error`` then
    handle.

    With ``group=True`` and one message at a time (``workers=1``, the default), the sink
    takes the messages waiting in its inbox when it takes one -- up to 16, and no more
    than the node's ``capacity`` -- and writes them in one transaction: their receipts
    resolve once it has committed, each counting its own rows, and a refused row is still
    dead-lettered alone, in its own message. If the transaction fails, nothing of it is
    stored and the messages are written again one by one, in order, each under the node's
    ``retries``/``on_error``. It is off by default: for 500-row batches from a CSV file
    it was slower (the writer idles while the loop prepares the whole group;
    ``docs/performance.md``); it is meant for many small messages, each of which would
    otherwise cost a commit.

    An existing table is used as it is: the columns written must exist in it, and a
    unique index on ``key`` is created if it has none. Nodes writing the same file share
    one connection and thread (see ``_sqlite_db``): no ``database is locked`` between them.

    For bulk loads, rows of values (``CsvSource``'s default with this sink as its only consumer)
    cost the event loop about a third less per row than dicts. With ``workers=2`` the next
    batch reaches the database thread while the previous one commits; whether that pays
    depends on the machine (once about 10% more rows/s from CSV on 2 cores, on a busy
    machine 20% fewer; ``python -m bench --only csv``, ``docs/performance.md``). Batches are
    still written in the order they arrive, each committed before its receipt resolves; but
    a batch that fails and is retried is written after the one behind it, so if two batches
    upsert the same key, the older values can win.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        table: str,
        *,
        key: str | Sequence[str] | None = None,
        schema: Mapping[str, str] | None = None,
        synchronous: str = "NORMAL",
        busy_timeout: float = 30.0,
        group: bool = False,
    ) -> None:
        self.path = path
        #: What the node calls with the messages waiting in its inbox (``group=True``).
        self.handle_group: Callable[[list[Any]], Awaitable[list[list[Rejection]]]] | None = (
            self._handle_group if group else None
        )
        self._absolute = os.path.abspath(os.fspath(path))
        self._declare(table, key, schema, quote)
        self.synchronous = check_synchronous(synchronous)
        self.busy_timeout = busy_timeout
        self._db: Database | None = None
        self._preparing = asyncio.Lock()
        self._columns: list[str] | None = None
        self._insert: Insert | None = None
        #: Per column order of incoming :class:`Rows`: how to put them in the table's.
        self._reorder: dict[tuple[str, ...], Callable[[Rows], list[Any]] | None] = {}

    def __repr__(self) -> str:
        return f"<SqliteSink {os.fspath(self.path)!r} table={self.table!r} key={self.key}>"

    @property
    def _where(self) -> str:
        return f"SqliteSink({os.fspath(self.path)!r}, table {self.table!r})"

    async def setup(self) -> None:
        if self._db is not None:
            return
        self._db = await Database.acquire(
            self._absolute, busy_timeout=self.busy_timeout, synchronous=self.synchronous
        )
        if self.schema is not None:
            async with self._preparing:
                await self._prepare(self.schema)

    async def teardown(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await db.release()

    async def handle(self, data: Any) -> None:
        """Upsert the message's records in one committed transaction; return None."""
        records = await self._records(data)
        if not records:
            return None
        values, origins = self._values(records)
        assert self._db is not None and self._insert is not None
        failures = await self._db.write(self._insert, values)
        self._reject_failed(records, origins, failures)
        return None

    async def _handle_group(self, messages: list[Any]) -> list[list[Rejection]]:
        """Upsert the records of several messages in one committed transaction, and
        return each message's rejected records (the node calls this with the messages
        waiting in its inbox: see ``SqliteSink``). Raises, having stored nothing, if the
        transaction fails."""
        rejected: list[list[Rejection]] = [[] for _ in messages]
        parts = []
        values: list[Any] = []
        for message, rejections in zip(messages, rejected, strict=True):
            records = await self._records(message)
            with rejections_into(rejections):
                part, origins = self._values(records) if records else ([], None)
            parts.append((records, origins, len(values), len(part)))
            values += part
        if not values:
            return rejected
        assert self._db is not None and self._insert is not None
        failures = await self._db.write(self._insert, values)
        width = len(self._insert.columns)
        starts = [start for _, _, start, _ in parts]
        for position, exc in failures:  # row positions in the joint write
            which = bisect.bisect_right(starts, position * width) - 1
            records, origins, start, _ = parts[which]
            with rejections_into(rejected[which]):
                self._reject_failed(records, origins, [(position - start // width, exc)])
        return rejected

    async def _records(self, data: Any) -> Sequence[Any]:
        """The message's records, the table ready for them."""
        if self._db is None:
            await self.setup()
        records = self._as_records(data)
        if records and self._columns is None:
            async with self._preparing:
                if self._columns is None:
                    await self._prepare(_infer_schema(records))
        return records

    def _values(self, records: Sequence[Any]) -> tuple[list[Any], list[int] | None]:
        """The values of the records that can be rows, laid end to end, and the record
        index of each row (None: every record is a row); the others are rejected."""
        assert self._insert is not None
        rows = self._in_column_order(records)
        try:
            return self._insert.values(rows), None
        except RecordsRefused:
            return self._values_one_by_one(records, rows)

    def _in_column_order(self, records: Sequence[Any]) -> Sequence[Any]:
        """The records, :class:`Rows` put in the table's column order."""
        if type(records) is not Rows:
            return records
        columns = records.columns
        try:
            reorder = self._reorder[columns]
        except KeyError:
            assert self._columns is not None
            reorder = self._reorder[columns] = reorderer(columns, self._columns)
        return records if reorder is None else reorder(records)

    def _reject_failed(
        self,
        records: Sequence[Any],
        origins: list[int] | None,
        failures: list[tuple[int, Exception]],
    ) -> None:
        """Dead-letter the records of the rows SQLite refused."""
        for position, exc in failures:
            index = origins[position] if origins is not None else position
            reason = f"{self._where}: {type(exc).__name__}: {exc}"
            reject_item(record_at(records, index), reason, index=index)

    def _values_one_by_one(
        self, records: Sequence[Any], rows: Sequence[Any]
    ) -> tuple[list[Any], list[int]]:
        """The values of the records that can be rows (rejecting the others), and the
        record index of each row (``rows``: the records in column order)."""
        insert = self._insert
        assert insert is not None
        keys = [(k, insert.columns.index(k)) for k in self.key]
        values: list[Any] = []
        origins = []
        for index, record in enumerate(rows):
            try:
                row = insert.row(record)
            except ValueError as exc:
                reject_item(record_at(records, index), f"{self._where}: {exc}", index=index)
                continue
            missing = [k for k, position in keys if row[position] is None]
            if missing:
                reason = f"{self._where}: no value for key column(s) {', '.join(missing)}"
                reject_item(record_at(records, index), reason, index=index)
                continue
            values.extend(row)
            origins.append(index)
        return values, origins

    # -- the table ---------------------------------------------------------------------

    async def _prepare(self, schema: Mapping[str, str]) -> None:
        """Create or check the table and build the upsert statement."""
        assert self._db is not None
        columns = list(schema)
        self._check_key(columns)
        info = await self._db.fetchall(f"PRAGMA table_info({quote(self.table)})")
        if not info:
            await self._db.execute(self._create_table_sql(schema))
        else:
            existing = [row[1] for row in info]
            unknown = [c for c in columns if c not in existing]
            if unknown:
                raise ValueError(
                    f"{self._where}: the table has no column(s) {unknown} "
                    f"(it has {existing}); alter the table or declare schema="
                )
            if self.key and not await self._has_unique_key(info):
                await self._create_key_index()
        self._columns = columns
        self._insert = Insert(self.table, columns, self.key, positional=self.schema is not None)

    def _create_table_sql(self, schema: Mapping[str, str]) -> str:
        definitions = []
        single_key = self.key[0] if len(self.key) == 1 else None
        for column, sql_type in schema.items():
            definition = f"{quote(column)} {sql_type}".rstrip()
            if column == single_key:
                definition += " PRIMARY KEY"
            if column in self.key and "NOT NULL" not in sql_type.upper():
                definition += " NOT NULL"
            definitions.append(definition)
        if len(self.key) > 1:
            definitions.append(f"PRIMARY KEY ({', '.join(map(quote, self.key))})")
        return f"CREATE TABLE IF NOT EXISTS {quote(self.table)} ({', '.join(definitions)})"

    async def _has_unique_key(self, info: list[Any]) -> bool:
        assert self._db is not None
        wanted = set(self.key)
        if {row[1] for row in info if row[5]} == wanted:  # the primary key
            return True
        indexes = await self._db.fetchall(f"PRAGMA index_list({quote(self.table)})")
        for index in indexes:
            _, name, unique, _, partial = index[:5]
            if unique and not partial:
                columns = await self._db.fetchall(f"PRAGMA index_info({quote(name)})")
                if {row[2] for row in columns} == wanted:
                    return True
        return False

    async def _create_key_index(self) -> None:
        assert self._db is not None
        name = f"{self.table}_{'_'.join(self.key)}_key"
        sql = (
            f"CREATE UNIQUE INDEX IF NOT EXISTS {quote(name)} "
            f"ON {quote(self.table)} ({', '.join(map(quote, self.key))})"
        )
        try:
            await self._db.execute(sql)
        except sqlite3.IntegrityError as exc:
            raise ValueError(
                f"{self._where}: cannot add a unique index on {list(self.key)}: the table "
                f"already holds duplicate keys ({exc})"
            ) from exc


def _infer_schema(records: Sequence[Any]) -> dict[str, str]:
    schema: dict[str, str] = {}
    for record in records:
        if not isinstance(record, Mapping):
            continue
        for column, value in record.items():
            if not schema.get(column) and value is not None:
                schema[column] = _sql_type(value)
            else:
                schema.setdefault(column, "")
    return schema
