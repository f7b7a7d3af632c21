"""Dead letters in a PostgreSQL table: :class:`PostgresDeadLetterSink`."""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import TYPE_CHECKING, Any

from .._deadletter import DeadLetter
from ._deadletters import _COLUMNS, _OpenClose  # one dead-letter table shape
from ._json import dumps_lenient
from ._postgres import _safe_dsn
from ._postgres_db import connect, driver, quote

if TYPE_CHECKING:
    import asyncpg

__all__ = ["PostgresDeadLetterSink"]

logger = logging.getLogger(__name__)


def _text(value: str | None) -> str | None:
    # PostgreSQL text cannot hold NUL characters; a reason or traceback quoting a bad
    # input may contain some.
    return None if value is None else value.replace("\x00", "\ufffd")


class PostgresDeadLetterSink(_OpenClose):
    """Write dead letters as rows of a PostgreSQL table (default ``dead_letters``).

    The columns are :class:`SqliteDeadLetterSink`'s: ``id`` (bigserial), ``created_at``
    (timestamptz), ``node``, ``error_type``, ``error_message``, ``payload`` (JSON text),
    ``traceback``, ``attempts``, ``item_index``, ``receipt_id``, ``origin`` and a unique
    ``dedupe_key``: a letter with an origin is stored once per (node, origin, index)
    (:attr:`DeadLetter.key`), so a batch sent again or a file fed again after a crash
    updates its row instead of adding one. Each letter is committed before ``write``
    returns; a lost connection is opened again once per letter. ``write`` logs (never
    raises) a letter it could not store. Use it as ``async with`` around the run (see
    :mod:`asyncpipe.connectors`).
    """

    def __init__(
        self, dsn: str, *, table: str = "dead_letters", connect_timeout: float = 30.0
    ) -> None:
        t = quote(table)
        self.dsn = dsn
        self.table = table
        self.connect_timeout = connect_timeout
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()  # one statement at a time on the connection
        self._create_sql = (
            f"CREATE TABLE IF NOT EXISTS {t} (id bigserial PRIMARY KEY, "
            "created_at timestamptz NOT NULL, node text NOT NULL, error_type text NOT NULL, "
            "error_message text NOT NULL, payload text, traceback text, "
            "attempts integer NOT NULL, item_index bigint, receipt_id bigint, "
            "origin text, dedupe_key text UNIQUE)"
        )
        names = ", ".join(map(quote, _COLUMNS))
        values = ", ".join(f"${i}" for i in range(1, len(_COLUMNS) + 1))
        self._insert_sql = f"INSERT INTO {t} ({names}) VALUES ({values})"
        updates = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in _COLUMNS[:-1])
        self._upsert_sql = f"{self._insert_sql} ON CONFLICT (dedupe_key) DO UPDATE SET {updates}"

    def __repr__(self) -> str:
        return f"<PostgresDeadLetterSink {_safe_dsn(self.dsn)!r} table={self.table!r}>"

    async def open(self) -> None:
        """Connect and create the table (``async with`` does this)."""
        async with self._lock:
            await self._connection()

    async def aclose(self) -> None:
        """Close the connection (idempotent)."""
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await conn.close(timeout=5)

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        conn = await connect(self.dsn, self.connect_timeout)
        try:
            await conn.execute(self._create_sql)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        return conn

    async def write(self, letter: DeadLetter) -> None:
        """Insert (or, for a replayed input, update) and commit one dead letter."""
        key = letter.key
        row: tuple[Any, ...] = (
            datetime.datetime.fromtimestamp(letter.timestamp, datetime.UTC),
            _text(letter.node),
            _text(letter.error_type),
            _text(letter.error_message),
            _text(dumps_lenient(letter.payload)),
            _text(letter.traceback),
            letter.attempts,
            letter.index,
            letter.receipt_id,
            _text(letter.origin),
            _text(key),
        )
        sql = self._insert_sql if key is None else self._upsert_sql
        try:
            async with self._lock:
                await self._execute(sql, row)
        except Exception:
            logger.exception(
                "%s: could not store a dead letter of node %r: %s: %s",
                _safe_dsn(self.dsn),
                letter.node,
                letter.error_type,
                letter.error_message,
            )

    async def _execute(self, sql: str, row: tuple[Any, ...]) -> None:
        pg = driver()
        for attempt in (1, 2):
            conn = await self._connection()
            try:
                await conn.execute(sql, *row)
                return
            except (pg.PostgresConnectionError, pg.InterfaceError, pg.AdminShutdownError, OSError):
                # Lost (a restart, a terminated backend): drop it, and try once more on
                # a new connection.
                self._conn = None
                conn.terminate()
                if attempt == 2:
                    raise
