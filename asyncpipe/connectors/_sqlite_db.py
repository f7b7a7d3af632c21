"""One writer per SQLite file: how several nodes write one database safely and fast.

SQLite allows one writer at a time per database file; writers on separate connections
contend for the file lock and, under load, fail with ``database is locked``. So every
writer in a process -- each :class:`SqliteSink`, the SQLite dead-letter sink -- that names
the same file shares one :class:`Database`: one connection living on one dedicated
thread. Each transaction is a single function run on that thread (one multi-row
statement, which SQLite runs as a transaction of its own, or ``BEGIN IMMEDIATE``, the
statements, ``COMMIT``, or ``ROLLBACK`` on error), so transactions of different nodes
queue up in order instead of colliding, and a transaction always completes or rolls back
as a whole, even if the task waiting for it is cancelled. A writer in another
process is handled by SQLite's busy timeout (``busy_timeout=``, default 30 s); taking the
write lock up front (``IMMEDIATE``, and a lone ``INSERT`` takes it as it starts) avoids
the deadlock a read-then-write transaction can hit.

Why a thread of our own rather than ``aiosqlite`` (which :class:`SqliteSource` uses)?
``aiosqlite`` is the same design -- a thread owning a ``sqlite3`` connection -- but makes
one thread hand-off per call, so a batch costs three (begin, executemany, commit), and a
cancelled caller can leave its transaction half done. On 2 vCPUs streaming 1e6 rows from a
CSV file, those hand-offs were a visible share of the time. Here a batch is one hand-off,
and usually one statement. The records are turned into a flat list of values on the event
loop, whose thread has just built them and still holds them in its CPU cache: read from
the database thread, each record came from the other core's cache, and those dict lookups
were that thread's largest single cost (perf).

Handing a batch to an idle database thread, the event loop waits -- at most
``_HANDOFF_WAIT`` (1 ms), GIL released -- until the thread has picked it up. The thread
needs the GIL to wake up and to bind the batch's values; without the wait it got it only
once the loop went idle, typically after parsing the next batch, so parsing and writing
took turns instead of overlapping. With it, the thread binds, releases the GIL inside
SQLite, and the loop parses the next batch while SQLite writes this one: one GIL hand-off
per batch, in the order that lets the two threads overlap. The loop never waits on a
thread that is busy (another node's transaction), nor on the write itself.

Writes queued while the thread is busy are committed together: the thread takes every
write waiting when it gets to them and runs them in one transaction (each write's future
resolves once that transaction has committed, with one wake-up of the event loop for all
of them). Under load a batch then costs a share of a commit and of a hand-off instead of
one of each; the thread hand-offs, each waiting for the event loop to let go of the GIL,
were what bounded the sinks' throughput. If the joint transaction fails, it is rolled
back and its writes are run again one by one, so a write fails (or dead-letters rows)
only for its own data, as when it runs alone.

The database is put in WAL mode (readers do not block the writer and vice versa) with
``synchronous=NORMAL`` by default: a committed transaction survives a crash of the
process; after a power loss the last transactions may roll back. Ask for ``"FULL"`` to
make every commit durable against power loss too (slower).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar

from .._errors import RecordsRefused
from ._sqlite_sql import Insert, quote

__all__ = ["DATA_ERRORS", "Database", "Insert", "RecordsRefused", "check_synchronous", "quote"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Errors caused by one row's data (a constraint, a value SQLite cannot store) rather than
#: by the database: the row is dead-lettered and the rest of its batch is committed.
DATA_ERRORS: tuple[type[Exception], ...] = (
    sqlite3.IntegrityError,
    sqlite3.InterfaceError,
    sqlite3.ProgrammingError,
    sqlite3.DataError,
    OverflowError,
)

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
# Most rows per INSERT statement (fewer if SQLite's limit on parameters says so). One
# statement for many rows binds them all, then lets SQLite insert them in one call that
# runs without the GIL -- instead of a GIL hand-off per row, as with executemany -- which
# matters when the event loop's thread is busy. A batch of up to this many rows is one
# statement, and so one GIL hand-off; beyond it a statement's size buys nothing more.
_ROWS_PER_STATEMENT = 1000
# Longest the event loop waits for an idle database thread to pick a write up (see the
# module docstring): a wake-up and the binding of one batch, with room for a slow wake-up.
_HANDOFF_WAIT = 0.001


def check_synchronous(level: str) -> str:
    upper = str(level).upper()
    if upper not in _SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, got {level!r}")
    return upper


def _call(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[T],
    fn: Callable[..., T],
    args: tuple[Any, ...],
    picked_up: threading.Lock | None,
) -> None:
    """On the database thread: run ``fn(*args)`` and resolve ``future`` on its loop
    (releasing ``picked_up`` first, for a caller waiting to hand the GIL over)."""
    if picked_up is not None:
        picked_up.release()
    if future.cancelled():  # a plain read; a cancel racing with it just lets the call run
        return
    try:
        result = fn(*args)
    except BaseException as exc:
        loop.call_soon_threadsafe(_resolve, future, None, exc)
    else:
        loop.call_soon_threadsafe(_resolve, future, result, None)


#: A write waiting for the database thread: the statement, the values, the caller's future.
_Write = tuple[Insert, list[Any], "asyncio.Future[list[tuple[int, Exception]]]"]
#: What became of a write: its rows' failures, or the error that failed it.
_Outcome = tuple[list[tuple[int, Exception]] | None, BaseException | None]


def _resolve_all(resolved: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, exc in resolved:
        _resolve(future, result, exc)


def _resolve(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # the caller was cancelled meanwhile
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


class Database:
    """The shared writing connection to one SQLite file (see the module docstring).

    ``db = await Database.acquire(path, ...)`` and ``await db.release()``; the connection
    closes when its last user releases it.
    """

    _open: ClassVar[dict[str, Database]] = {}

    def __init__(self, path: str, busy_timeout: float) -> None:
        self.path = path
        self._users = 0
        self._calls = 0  # submitted and not yet finished (read on the loop's thread)
        self._conn: sqlite3.Connection | None = None
        self._synchronous: int | None = None  # index into _SYNCHRONOUS
        self._max_variables = 999  # SQLite's limit on ? per statement; read on connect
        # One thread: calls run one at a time, in the order they were made.
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"asyncpipe-sqlite:{path}")
        # Writes waiting for the thread, and whether a flush of them is queued there.
        self._writes: collections.deque[_Write] = collections.deque()
        self._flush_queued = False
        self._ready: Future[None] = self._thread.submit(self._connect, busy_timeout)

    def __repr__(self) -> str:
        return f"<Database {self.path!r} users={self._users}>"

    @classmethod
    async def acquire(cls, path: str, *, busy_timeout: float, synchronous: str) -> Database:
        """The shared connection to the database at ``path`` (an absolute path)."""
        level = _SYNCHRONOUS.index(check_synchronous(synchronous))
        db = cls._open.get(path)
        if db is None:
            db = cls._open[path] = Database(path, busy_timeout)
        db._users += 1
        try:
            # Shielded: a cancelled acquirer must not cancel the connect others wait for.
            await asyncio.shield(asyncio.wrap_future(db._ready))
            await db.run(db._raise_synchronous, level)
        except BaseException:
            await db.release()
            raise
        return db

    async def release(self) -> None:
        self._users -= 1
        if self._users > 0:
            return
        if Database._open.get(self.path) is self:
            del Database._open[self.path]
        try:
            await asyncio.shield(asyncio.wrap_future(self._thread.submit(self._close)))
        finally:
            self._thread.shutdown(wait=False)  # the thread is idle now: it just exits

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the database thread (it may use ``self.conn``).

        A caller cancelled before the call starts cancels it; once started, the call
        completes (or rolls back) on its own.
        """
        # The thread resolves a future of the loop directly rather than through a
        # concurrent.futures.Future and wrap_future: one lock and one callback fewer per
        # call, on both threads -- per batch, that is a visible share on 2 vCPUs.
        return await self._submit(fn, args, handoff=False)

    async def _submit(self, fn: Callable[..., T], args: tuple[Any, ...], *, handoff: bool) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        picked_up = None
        if handoff and not self._calls:  # the thread is idle: it takes this at once
            picked_up = threading.Lock()
            picked_up.acquire()
        self._calls += 1
        try:
            self._thread.submit(_call, loop, future, fn, args, picked_up)
            if picked_up is not None:
                # Blocks the loop (GIL released) until the thread has the batch: see the
                # module docstring.
                picked_up.acquire(timeout=_HANDOFF_WAIT)
            return await future
        finally:
            self._calls -= 1

    async def fetchall(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        return await self.run(self._fetchall, sql, parameters)

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> None:
        """Run one statement in autocommit mode (DDL, or DML committed at once)."""
        await self.run(self._execute, sql, parameters)

    async def write(self, insert: Insert, values: list[Any]) -> list[tuple[int, Exception]]:
        """Insert rows in one transaction, committed before returning.

        ``values`` are the rows' values laid end to end (``len(insert.columns)`` per row,
        as :meth:`Insert.values` makes them). Rows that fail on their data (see
        ``DATA_ERRORS``) are left out and the others committed; returns ``(row index,
        error)`` for those. Any other error (disk full, locked beyond the busy timeout)
        rolls the whole batch back and is raised.
        """
        if len(values) % len(insert.columns):
            raise ValueError(f"{len(values)} values do not make rows of {len(insert.columns)}")
        if not values:
            return []
        future: asyncio.Future[list[tuple[int, Exception]]]
        future = asyncio.get_running_loop().create_future()
        self._writes.append((insert, values, future))
        if self._flush_queued:
            return await future  # committed by the flush already queued, with the others
        self._flush_queued = True
        picked_up = None
        if not self._calls:  # the thread is idle: it takes this at once
            picked_up = threading.Lock()
            picked_up.acquire()
        self._calls += 1
        try:
            self._thread.submit(self._flush, picked_up)
            if picked_up is not None:
                # Blocks the loop (GIL released) until the thread has the batch: see the
                # module docstring.
                picked_up.acquire(timeout=_HANDOFF_WAIT)
            return await future
        finally:
            self._calls -= 1

    # -- on the database thread --------------------------------------------------------

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"SQLite database {self.path} is not open")
        return self._conn

    def _connect(self, busy_timeout: float) -> None:
        # isolation_level=None: no implicit transactions; we BEGIN and COMMIT ourselves.
        try:
            conn = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise type(exc)(f"{exc}: {self.path}") from exc
        try:
            _enter_wal(conn, busy_timeout)
        except BaseException:
            conn.close()
            raise
        self._max_variables = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self._conn = conn

    def _raise_synchronous(self, level: int) -> None:
        # Writers sharing the file get the strictest level any of them asked for.
        if self._synchronous is None or level > self._synchronous:
            self.conn.execute(f"PRAGMA synchronous={_SYNCHRONOUS[level]}")
            self._synchronous = level

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _fetchall(self, sql: str, parameters: Sequence[Any]) -> list[Any]:
        return self.conn.execute(sql, parameters).fetchall()

    def _execute(self, sql: str, parameters: Sequence[Any]) -> None:
        self.conn.execute(sql, parameters)

    def _flush(self, picked_up: threading.Lock | None) -> None:
        """Commit every write waiting (see the module docstring), then resolve their
        futures on their loop, all at once (releasing ``picked_up`` first, for a caller
        waiting to hand the GIL over)."""
        if picked_up is not None:
            picked_up.release()
        self._flush_queued = False  # before taking them: a write queued later flushes again
        writes = []
        while self._writes:
            write = self._writes.popleft()
            if not write[2].cancelled():  # a plain read; a cancel racing with it lets it run
                writes.append(write)
        if not writes:
            return
        outcomes = self._write_together(writes) if len(writes) > 1 else None
        if outcomes is None:  # alone, or the joint transaction failed: one by one
            outcomes = [self._outcome(insert, values) for insert, values, _ in writes]
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for (_, _, future), (result, error) in zip(writes, outcomes, strict=True):
            by_loop.setdefault(future.get_loop(), []).append((future, result, error))
        for loop, resolved in by_loop.items():
            loop.call_soon_threadsafe(_resolve_all, resolved)

    def _outcome(self, insert: Insert, values: list[Any]) -> _Outcome:
        try:
            return self._write(insert, values), None
        except BaseException as exc:
            return None, exc

    def _write_together(self, writes: list[_Write]) -> list[_Outcome] | None:
        """``writes`` in one transaction: an empty list of failures for each, or None
        (rolled back) if any statement failed."""
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            for insert, values, _ in writes:
                for sql, part in self._statements(insert, values):
                    conn.execute(sql, part)
            conn.execute("COMMIT")
        except Exception:
            self._rollback()
            return None
        return [([], None)] * len(writes)

    def _statements(self, insert: Insert, values: list[Any]) -> list[tuple[str, list[Any]]]:
        """The statements inserting the rows of ``values``, with their parameters."""
        width = len(insert.columns)
        per = max(1, min(_ROWS_PER_STATEMENT, self._max_variables // width)) * width
        if len(values) <= per:
            return [(insert.sql(len(values) // width), values)]
        parts = [values[start : start + per] for start in range(0, len(values), per)]
        return [(insert.sql(len(part) // width), part) for part in parts]

    def _write(self, insert: Insert, values: list[Any]) -> list[tuple[int, Exception]]:
        conn = self.conn
        width = len(insert.columns)
        try:
            statements = self._statements(insert, values)
            if len(statements) == 1:
                # One statement is a transaction of its own (autocommit): it takes the
                # write lock when it starts, like BEGIN IMMEDIATE, and commits as it ends.
                # Without BEGIN and COMMIT a batch releases and retakes the GIL once,
                # rather than three times -- each a wait while the event loop holds it.
                conn.execute(*statements[0])
                return []
            conn.execute("BEGIN IMMEDIATE")
            for sql, part in statements:
                conn.execute(sql, part)
            conn.execute("COMMIT")
            return []
        except DATA_ERRORS:
            self._rollback()
        except BaseException:
            self._rollback()
            raise
        rows = [values[start : start + width] for start in range(0, len(values), width)]
        return self._write_each(insert.sql(1), rows)

    def _write_each(self, sql: str, rows: Sequence[Sequence[Any]]) -> list[tuple[int, Exception]]:
        # One statement per row in one transaction: SQLite undoes just the failing
        # statement, so the good rows are still committed together.
        conn = self.conn
        failures: list[tuple[int, Exception]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for index, row in enumerate(rows):
                try:
                    conn.execute(sql, row)
                except DATA_ERRORS as exc:
                    failures.append((index, exc))
            conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return failures

    def _rollback(self) -> None:
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except sqlite3.Error:
            logger.exception("%s: rollback failed", self.path)


def _enter_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Put the file in WAL mode. Two processes opening a new file at once may find it
    locked while the other switches it, and SQLite does not call its busy handler for
    that: wait as the handler would, up to ``busy_timeout``."""
    deadline, pause = time.monotonic() + busy_timeout, 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)  # on the database's own thread, as SQLite's busy handler does
        pause = min(pause * 2, 0.1)
