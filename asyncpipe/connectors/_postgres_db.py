"""What the PostgreSQL connectors share: the driver (``asyncpg``, imported on first use),
connections, the table a sink writes and its set-based upsert.

A sink's batch is one statement::

    INSERT INTO t (a, b) SELECT * FROM unnest($1::bigint[], $2::text[])
    ON CONFLICT (a) DO UPDATE SET b = excluded.b

one array per column, run in autocommit mode: PostgreSQL runs a lone statement as a
transaction of its own, so a batch costs one round trip (``COPY`` into a temporary table
then one upsert needs four -- ``BEGIN``, ``COPY``, ``INSERT``, ``COMMIT``; measured in
``docs/postgres.md``). A key that comes twice in one batch would make PostgreSQL refuse the
whole statement (``ON CONFLICT DO UPDATE`` cannot touch a row twice), so the last record
per key is kept, as upserting the records one after the other would leave it.

A row PostgreSQL refuses (a constraint, a value its column type rejects -- asyncpg checks
types before sending) fails the statement; the batch is then written again in one
transaction, halving the part that fails under savepoints until the refused rows are
alone: ``k`` bad rows cost about ``2 k log2(n)`` statements, and the other rows commit.
"""

from __future__ import annotations

import datetime
import decimal
import operator
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._errors import RecordsRefused
from .._rows import Rows
from ._sqlite_db import quote
from ._sqlite_sql import reorderer

if TYPE_CHECKING:
    import asyncpg

__all__ = [
    "Connections",
    "PostgresTable",
    "connect",
    "data_errors",
    "driver",
    "infer_pg_schema",
    "quote",
]

_INSTALL = "the PostgreSQL connectors need asyncpg: pip install 'asyncpipe[postgres]'"

# Python type -> column type for tables created from the first batch (first match wins:
# bool before int, datetime before date).
_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "boolean"),
    (int, "bigint"),
    (float, "double precision"),
    (decimal.Decimal, "numeric"),
    (str, "text"),
    (bytes, "bytea"),
    (datetime.datetime, "timestamptz"),
    (datetime.date, "date"),
    (datetime.time, "time"),
    (datetime.timedelta, "interval"),
    (uuid.UUID, "uuid"),
)


def driver() -> Any:
    """The ``asyncpg`` module; ``ImportError`` saying which extra to install."""
    try:
        import asyncpg
    except ImportError as exc:
        raise ImportError(_INSTALL) from exc
    return asyncpg


async def connect(dsn: str, timeout: float) -> asyncpg.Connection:
    """A new connection (``ImportError`` without asyncpg)."""
    conn: asyncpg.Connection = await driver().connect(dsn, timeout=timeout)
    return conn


def data_errors() -> tuple[type[Exception], ...]:
    """Errors caused by one row's data rather than by the server: a value its column type
    rejects (class 22, also raised by asyncpg before sending) and a constraint (class 23)."""
    pg = driver()
    return (pg.DataError, pg.IntegrityConstraintViolationError)


def infer_pg_schema(records: Sequence[Any], where: str) -> dict[str, str]:
    """Columns from the records' fields (first-seen order), typed from their first
    non-null values; ``ValueError`` for a value with no obvious column type."""
    schema: dict[str, str] = {}
    for record in records:
        if not isinstance(record, Mapping):
            continue
        for name, value in record.items():
            if schema.get(name, "") == "" and value is not None:
                schema[name] = _pg_type(value, name, where)
            else:
                schema.setdefault(name, "")
    untyped = [name for name, sql_type in schema.items() if not sql_type]
    for name in untyped:
        schema[name] = "text"  # only NULLs seen
    return schema


def _pg_type(value: Any, name: str, where: str) -> str:
    for python_type, sql_type in _TYPES:
        if isinstance(value, python_type):
            return sql_type
    raise ValueError(
        f"{where}: no column type for field {name!r} ({type(value).__name__}); declare schema="
    )


class Connections:
    """A sink's connections: one per concurrent call, opened when first needed and kept.

    A node runs ``workers`` calls at once, so the sink holds as many connections as its
    node's workers -- the pool is sized by the node without being told. A connection that
    failed (lost, or the server restarted) is closed, and the next call opens a new one.
    """

    def __init__(self, dsn: str, connect_timeout: float) -> None:
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self._idle: list[asyncpg.Connection] = []
        self.opened = 0  # connections opened so far (for tests and metrics)
        self.open = 0  # connections currently open

    async def acquire(self) -> asyncpg.Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.is_closed():
                return conn
            self.open -= 1
        conn = await connect(self.dsn, self.connect_timeout)
        self.opened += 1
        self.open += 1
        return conn

    def release(self, conn: asyncpg.Connection, *, broken: bool = False) -> None:
        if broken or conn.is_closed():
            self.open -= 1
            conn.terminate()
        else:
            self._idle.append(conn)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            self.open -= 1
            await conn.close(timeout=5)


class PostgresTable:
    """The table a sink writes: its columns, their types, and the upsert of a batch."""

    def __init__(self, table: str, columns: Mapping[str, str], key: Sequence[str]) -> None:
        self.name = table
        self.columns = list(columns)
        self.types = dict(columns)
        self.key = tuple(key)
        names = ", ".join(map(quote, self.columns))
        arrays = ", ".join(f"${i}::{columns[c]}[]" for i, c in enumerate(self.columns, start=1))
        sql = f"INSERT INTO {quote(table)} ({names}) SELECT * FROM unnest({arrays})"
        if self.key:
            conflict = ", ".join(map(quote, self.key))
            updates = [f"{quote(c)} = excluded.{quote(c)}" for c in self.columns if c not in key]
            action = f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
            sql += f" ON CONFLICT ({conflict}) {action}"
        self.sql = sql
        getter = operator.itemgetter(*self.columns)
        self.row_of: Callable[[Any], tuple[Any, ...]] = (
            getter if len(self.columns) > 1 else lambda record: (getter(record),)
        )
        self._key_positions = [self.columns.index(k) for k in self.key]
        self._reorder: dict[tuple[str, ...], Callable[[Rows], list[Any]] | None] = {}

    def _in_column_order(self, records: Rows) -> list[Any]:
        columns = records.columns
        try:
            reorder = self._reorder[columns]
        except KeyError:
            reorder = self._reorder[columns] = reorderer(columns, self.columns)
        if reorder is None:
            if not all(map(len(columns).__eq__, map(len, records))):
                raise RecordsRefused
            return records
        return reorder(records)

    def rows(self, records: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The records as rows (tuples in ``columns`` order; :class:`Rows` put in that
        order). Raise :class:`RecordsRefused` if one is not a mapping, lacks a column or
        has a NULL key."""
        try:
            if type(records) is Rows:
                rows = self._in_column_order(records)
            else:
                rows = list(map(self.row_of, records))
        except (KeyError, TypeError, IndexError):
            raise RecordsRefused from None
        for position in self._key_positions:
            if any(row[position] is None for row in rows):
                raise RecordsRefused
        return rows

    def last_per_key(self, rows: list[tuple[Any, ...]]) -> list[int]:
        """Indexes (into ``rows``) of the rows to write: all, unless a key repeats, then
        the last row of each key, in order."""
        if not self._key_positions:
            return list(range(len(rows)))
        if len(self._key_positions) == 1:
            position = self._key_positions[0]
            keys: list[Any] = [row[position] for row in rows]
        else:
            keys = [tuple(row[p] for p in self._key_positions) for row in rows]
        last = {key: index for index, key in enumerate(keys)}
        if len(last) == len(rows):
            return list(range(len(rows)))
        return sorted(last.values())

    async def write(self, conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        """Upsert ``rows`` in one statement (atomic: all or none)."""
        await conn.execute(self.sql, *zip(*rows, strict=True))

    async def write_apart(
        self, conn: asyncpg.Connection, rows: Sequence[tuple[Any, ...]]
    ) -> list[tuple[int, Exception]]:
        """Upsert ``rows`` in one transaction, leaving out those PostgreSQL refuses;
        return ``(row index, error)`` for them. Other errors roll everything back."""
        failures: list[tuple[int, Exception]] = []
        async with conn.transaction():
            await self._bisect(conn, rows, 0, failures)
        return failures

    async def _bisect(
        self,
        conn: asyncpg.Connection,
        rows: Sequence[tuple[Any, ...]],
        offset: int,
        failures: list[tuple[int, Exception]],
    ) -> None:
        try:
            async with conn.transaction():  # a savepoint
                await self.write(conn, rows)
        except data_errors() as exc:
            if len(rows) == 1:
                failures.append((offset, exc))
                return
            middle = len(rows) // 2
            await self._bisect(conn, rows[:middle], offset, failures)
            await self._bisect(conn, rows[middle:], offset + middle, failures)
