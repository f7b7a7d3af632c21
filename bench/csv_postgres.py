"""The CSV -> PostgreSQL workload of ``python -m bench`` (``--only postgres``).

Both sides read the CSV file of :mod:`bench.csv_sqlite` with the same column converters
(``id``, ``client_id`` int, ``date`` ``date.fromisoformat``, ``amount`` float) and upsert
every row, ``batch`` rows per transaction, into the same table (``id bigint PRIMARY KEY``,
``date date``, ``amount double precision``, text otherwise), emptied before each run:

* **asyncpipe**: ``CsvSource(path, batch_size=batch, types=...)`` -> ``PostgresSink(dsn,
  "tx", key="id", schema=...)``, the sink node with the default ``workers=1`` (judged; one
  connection) and with ``workers=2`` (two connections, two batches in flight).
* **plain loop**: what one writes by hand with asyncpg -- ``csv.reader``, the converters
  in a list comprehension, and per batch the sink's own statement (``INSERT ... SELECT *
  FROM unnest($1::bigint[], ...) ON CONFLICT (id) DO UPDATE``, one round trip, autocommit)
  on one connection. The same upsert in the same batches: the ratio is the framework's
  cost.

The server is ``DATABASE_URL`` if set, else a PostgreSQL 16 started from the ``pgserver``
wheel in a temporary directory (stopped and deleted after). Each run is a fresh process,
as in :mod:`bench.csv_sqlite` (whose :class:`CsvRun` and :class:`CsvResults` it uses).
"""

from __future__ import annotations

import asyncio
import csv
import datetime
import itertools
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .csv_sqlite import (
    BASELINE,
    JUDGED,
    PIPELINED,
    CsvResults,
    CsvRun,
    _peak_kb,
    _start,
    load,
    measure_side,
    write_csv,
)

__all__ = ["PG_SIDES", "TARGET", "postgres_workload"]

TARGET = 0.9  # asyncpipe workers=1 rows/s over the plain asyncpg loop's
SCHEMA = {
    "id": "bigint",
    "client_id": "bigint",
    "date": "date",
    "amount": "double precision",
    "currency": "text",
    "description": "text",
}
TYPES: dict[str, Callable[[str], Any]] = {
    "id": int,
    "client_id": int,
    "date": datetime.date.fromisoformat,
    "amount": float,
}
CREATE = (
    "DROP TABLE IF EXISTS tx; CREATE TABLE tx (id bigint PRIMARY KEY, client_id bigint, "
    "date date, amount double precision, currency text, description text)"
)
UPSERT = (
    "INSERT INTO tx (id, client_id, date, amount, currency, description) "
    "SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::date[], $4::double precision[], "
    "$5::text[], $6::text[]) ON CONFLICT (id) DO UPDATE SET client_id = excluded.client_id, "
    "date = excluded.date, amount = excluded.amount, currency = excluded.currency, "
    "description = excluded.description"
)


def plain_loop(csv_path: str, dsn: str, batch: int, use_uvloop: bool) -> CsvRun:
    """The plain asyncpg loop: one connection, one unnest upsert per batch."""
    import asyncpg

    from bench.measure import in_loop

    async def load() -> CsvRun:
        conn = await asyncpg.connect(dsn)
        date = datetime.date.fromisoformat
        before = _start()
        started = time.perf_counter()
        count = 0
        # Blocking reads on purpose: the yardstick is the simplest loop, nothing else runs.
        with open(csv_path, newline="") as file:  # noqa: ASYNC230
            reader = csv.reader(file)
            next(reader)
            while rows := list(itertools.islice(reader, batch)):
                typed = [(int(a), int(b), date(c), float(d), e, f) for a, b, c, d, e, f in rows]
                await conn.execute(UPSERT, *zip(*typed, strict=True))
                count += len(typed)
        seconds = time.perf_counter() - started
        peak = _peak_kb()
        await conn.close()
        return CsvRun(count, seconds, peak, before)

    return in_loop(load(), use_uvloop)


def _through_asyncpipe(
    csv_path: str, dsn: str, batch: int, use_uvloop: bool, *, workers: int
) -> CsvRun:
    from asyncpipe.connectors import CsvSource, PostgresSink
    from bench.measure import in_loop

    source = CsvSource(csv_path, batch_size=batch, types=TYPES)
    sink = PostgresSink(dsn, "tx", key="id", schema=SCHEMA)
    seconds, before, peak = in_loop(load(source, sink, workers), use_uvloop)
    return CsvRun(_count(dsn, use_uvloop), seconds, peak, before)


def asyncpipe_serial(csv_path: str, dsn: str, batch: int, use_uvloop: bool) -> CsvRun:
    """``CsvSource -> PostgresSink``, the sink node with the default ``workers=1``."""
    return _through_asyncpipe(csv_path, dsn, batch, use_uvloop, workers=1)


def asyncpipe_pipelined(csv_path: str, dsn: str, batch: int, use_uvloop: bool) -> CsvRun:
    """``CsvSource -> PostgresSink``, the sink node with ``workers=2``."""
    return _through_asyncpipe(csv_path, dsn, batch, use_uvloop, workers=2)


def _count(dsn: str, use_uvloop: bool) -> int:
    import asyncpg

    from bench.measure import in_loop

    async def count() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            rows: int = await conn.fetchval("SELECT count(*) FROM tx")
            return rows
        finally:
            await conn.close()

    return in_loop(count(), use_uvloop)


def _reset(dsn: str) -> None:
    import asyncpg

    async def reset() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(CREATE)
        finally:
            await conn.close()

    asyncio.run(reset())


Side = Callable[[str, str, int, bool], CsvRun]
#: The sides, baseline first: label -> function (run in a fresh process).
PG_SIDES: dict[str, Side] = {
    BASELINE: plain_loop,
    JUDGED: asyncpipe_serial,
    PIPELINED: asyncpipe_pipelined,
}


class _Workload:
    def __init__(self, directory: Path, dsn: str, rows: int, batch: int, uvloop: bool) -> None:
        self.csv_path = str(directory / "transactions.csv")
        self.dsn = dsn
        self.use_uvloop = uvloop
        self.results = CsvResults(rows, batch, {side: [] for side in PG_SIDES})
        write_csv(Path(self.csv_path), rows)

    def measure(self, side: str) -> CsvRun:
        """Run one side once on an empty table, in a fresh process; record the run."""
        _reset(self.dsn)
        return measure_side(
            self.results, side, PG_SIDES[side], self.csv_path, self.dsn, self.use_uvloop
        )


@contextmanager
def _server(directory: Path) -> Iterator[str]:
    """``DATABASE_URL``, or a PostgreSQL started from the pgserver wheel for the run."""
    dsn = os.environ.get("DATABASE_URL")
    if dsn:
        yield dsn
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR is not set
        from pgserver import postgres_server
    server = postgres_server.get_server(directory / "pgdata", cleanup_mode="delete")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


@contextmanager
def postgres_workload(rows: int, batch: int, use_uvloop: bool) -> Iterator[_Workload]:
    """The CSV file (written now) and the server, for the time of the benchmark."""
    with tempfile.TemporaryDirectory(prefix="asyncpipe-bench-pg-") as tmp:
        os.chmod(tmp, 0o755)  # the server may run as another user (as root: pgserver's)
        with _server(Path(tmp)) as dsn:
            yield _Workload(Path(tmp), dsn, rows, batch, use_uvloop)
