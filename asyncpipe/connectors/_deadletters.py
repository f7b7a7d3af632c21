"""Dead-letter sinks: keep a pipeline's rejects in a SQLite table or a JSON Lines file.

Both implement :class:`asyncpipe.DeadLetterSink` (``async write(letter)``) and are given
to ``PipelineExecutor(dead_letter_sink=...)``. The payload is stored as JSON (values JSON
cannot hold are stored as their ``repr``).

The executor does not open or close its dead-letter sink, so use the sink as an async
context manager around the run::

    async with SqliteDeadLetterSink("results.db") as dead_letters:
        await PipelineExecutor(producers, consumers, dead_letter_sink=dead_letters).run()

Used without ``async with``, :class:`SqliteDeadLetterSink` opens its database at the first
write and keeps it until ``aclose()`` (its thread never keeps the interpreter from
exiting); :class:`JsonLinesDeadLetterSink` opens, appends to and closes the file at every
write (correct, but slower).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
from typing import Any, Self

from .._deadletter import DeadLetter
from ._files import AppendingFile
from ._json import dumps, dumps_lenient
from ._sqlite_db import Database, Insert, check_synchronous, quote

__all__ = ["JsonLinesDeadLetterSink", "SqliteDeadLetterSink"]

logger = logging.getLogger(__name__)

_COLUMNS = (
    "created_at",
    "node",
    "error_type",
    "error_message",
    "payload",
    "traceback",
    "attempts",
    "item_index",
    "receipt_id",
    "origin",
    "dedupe_key",
)


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat()


class _OpenClose:
    """``async with sink:`` opens it and closes it on the way out."""

    async def open(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class SqliteDeadLetterSink(_OpenClose):
    """Write dead letters as rows of an SQLite table (default ``dead_letters``).

    Columns: ``id`` (autoincrement), ``created_at`` (ISO 8601, UTC), ``node``,
    ``error_type``, ``error_message`` (the reason), ``payload`` (JSON), ``traceback``,
    ``attempts``, ``item_index`` (the item's position in its batch, or a source's line
    number), ``receipt_id``, ``origin`` (the input it came from: a batch id, a file) and
    ``dedupe_key``. Each letter is committed before ``write`` returns. The database is
    shared with any :class:`SqliteSink` writing the same file.

    A letter with an origin is stored once per (node, origin, index)
    (:attr:`DeadLetter.key`, a unique ``dedupe_key``): a batch sent again or a file fed
    again after a crash updates its row instead of adding one. A table made by an older
    version gains the two columns when opened.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        table: str = "dead_letters",
        synchronous: str = "NORMAL",
        busy_timeout: float = 30.0,
    ) -> None:
        self.path = path
        self._absolute = os.path.abspath(os.fspath(path))
        self.table = table
        self.synchronous = check_synchronous(synchronous)
        self.busy_timeout = busy_timeout
        self._db: Database | None = None
        self._opening = asyncio.Lock()
        self._created = False
        t = quote(table)
        self._create_sql = (
            f"CREATE TABLE IF NOT EXISTS {t} (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "created_at TEXT NOT NULL, node TEXT NOT NULL, error_type TEXT NOT NULL, "
            "error_message TEXT NOT NULL, payload TEXT, traceback TEXT, "
            "attempts INTEGER NOT NULL, item_index INTEGER, receipt_id INTEGER, "
            "origin TEXT, dedupe_key TEXT)"
        )
        self._index_sql = (
            f"CREATE UNIQUE INDEX IF NOT EXISTS {quote(table + '_dedupe_key')} ON {t} (dedupe_key)"
        )
        self._insert = Insert(table, _COLUMNS)
        self._upsert = Insert(table, _COLUMNS, key=("dedupe_key",))

    def __repr__(self) -> str:
        return f"<SqliteDeadLetterSink {os.fspath(self.path)!r} table={self.table!r}>"

    async def open(self) -> None:
        """Open the database and create the table (``async with`` does this)."""
        async with self._opening:  # two first writes at once open it once
            if self._db is None:
                self._db = await self._acquire()

    async def aclose(self) -> None:
        """Close the database (idempotent)."""
        db, self._db = self._db, None
        if db is not None:
            await db.release()

    async def _acquire(self) -> Database:
        t = quote(self.table)
        db = await Database.acquire(
            self._absolute, busy_timeout=self.busy_timeout, synchronous=self.synchronous
        )
        try:
            if not self._created:
                await db.execute(self._create_sql)
                columns = {row[1] for row in await db.fetchall(f"PRAGMA table_info({t})")}
                for column in ("origin", "dedupe_key"):
                    if column not in columns:  # a table made before dedupe existed
                        await db.execute(f"ALTER TABLE {t} ADD COLUMN {column} TEXT")
                await db.execute(self._index_sql)
                self._created = True
        except BaseException:
            await db.release()
            raise
        return db

    async def write(self, letter: DeadLetter) -> None:
        """Insert and commit one dead letter. Logs (does not raise) if that fails."""
        row = (
            _iso(letter.timestamp),
            letter.node,
            letter.error_type,
            letter.error_message,
            dumps_lenient(letter.payload),
            letter.traceback,
            letter.attempts,
            letter.index,
            letter.receipt_id,
            letter.origin,
            key := letter.key,
        )
        try:
            if self._db is None:
                await self.open()
            assert self._db is not None
            insert = self._insert if key is None else self._upsert
            failures = await self._db.write(insert, list(row))
            if failures:
                raise failures[0][1]
        except Exception:
            logger.exception(
                "%s: could not store a dead letter of node %r: %s: %s",
                os.fspath(self.path),
                letter.node,
                letter.error_type,
                letter.error_message,
            )


class JsonLinesDeadLetterSink(_OpenClose):
    """Append dead letters to a JSON Lines file, one object per line, flushed per letter.

    Keys: ``created_at`` (ISO 8601, UTC), ``node``, ``error_type``, ``error_message``,
    ``payload``, ``traceback``, ``attempts``, ``index``, ``receipt_id``, ``origin``.

    The file is an append-only log: a replayed input (a batch sent again, a file fed again)
    appends its letter again. Readers that want one per input keep the last line per
    (``node``, ``origin``, ``index``); :class:`SqliteDeadLetterSink` does that itself.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, encoding: str = "utf-8", fsync: bool = False
    ) -> None:
        self.path = path
        self.encoding = encoding
        self.fsync = fsync
        self._file: AppendingFile | None = None

    def __repr__(self) -> str:
        return f"<JsonLinesDeadLetterSink {os.fspath(self.path)!r}>"

    def _new_file(self) -> AppendingFile:
        return AppendingFile(self.path, encoding=self.encoding, fsync=self.fsync)

    async def open(self) -> None:
        """Open the file for appending (``async with`` does this)."""
        if self._file is None:
            file = self._new_file()
            await file.open()
            self._file = file

    async def aclose(self) -> None:
        """Close the file (idempotent)."""
        file, self._file = self._file, None
        if file is not None:
            await file.close()

    async def write(self, letter: DeadLetter) -> None:
        """Append and flush one dead letter. Logs (does not raise) if that fails."""
        fields: dict[str, Any] = {
            "created_at": _iso(letter.timestamp),
            "node": letter.node,
            "error_type": letter.error_type,
            "error_message": letter.error_message,
            "traceback": letter.traceback,
            "attempts": letter.attempts,
            "index": letter.index,
            "receipt_id": letter.receipt_id,
            "origin": letter.origin,
        }
        # The payload is encoded on its own, so an odd payload cannot spoil the rest.
        line = dumps(fields)[:-1] + ',"payload":' + dumps_lenient(letter.payload) + "}\n"
        try:
            if self._file is not None:
                await self._file.write(line)
            else:
                file = self._new_file()
                await file.open()
                try:
                    await file.write(line)
                finally:
                    await file.close()
        except Exception:
            logger.exception(
                "%s: could not store a dead letter of node %r: %s: %s",
                os.fspath(self.path),
                letter.node,
                letter.error_type,
                letter.error_message,
            )
