"""The CSV -> SQLite workload of ``python -m bench`` (``--only csv``).

Both sides read the same generated CSV file (``id,client_id,date,amount,currency,
description``) and upsert every row, ``batch`` rows per transaction, into the same table
(``id INTEGER PRIMARY KEY``, WAL, ``synchronous=NORMAL``):

* **asyncpipe**: ``CsvSource(path, batch_size=batch)`` -> ``SqliteSink(db, "tx", key="id",
  schema=...)``, two nodes run by a :class:`PipelineExecutor`. At the default
  ``records="auto"`` the source emits rows of values (``asyncpipe.Rows``), because its
  only consumer, the sink with a schema, accepts them; the sink commits each batch before
  its receipt resolves. Measured three times: with the sink node's default ``workers=1``
  (judged: the default settings), with ``workers=2`` (the next batch is handed to the
  database thread while the previous one commits), and with ``CsvSource(...,
  records="dicts")`` (a dict per record, what a handler of yours would get; ``workers=1``).
* **plain loop**: what one writes without a framework -- ``csv.reader`` over the open
  file, ``itertools.islice`` batches of row lists, ``sqlite3.executemany`` of the same
  upsert and a ``commit`` per batch, all synchronous. This is the yardstick of the target.

Every measurement runs in a fresh (spawned) process, so each side starts cold and its
memory is its own: ``peak_kb`` is the process's peak RSS during the run (Linux's
``VmHWM``, reset just before the run through ``/proc/self/clear_refs``), ``start_kb`` its
RSS just before the run. (Not ``ru_maxrss``: a spawned child's includes the RSS of the
parent it was forked from.) Nothing here prints: :mod:`bench.report` does.
"""

from __future__ import annotations

import csv
import itertools
import os
import random
import resource
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "BASELINE",
    "DICTS",
    "JUDGED",
    "PIPELINED",
    "SIDES",
    "TARGET",
    "CsvResults",
    "CsvRun",
    "csv_workload",
]

TARGET = 0.9  # asyncpipe rows/s over the plain loop's (judged on JUDGED)
CAPACITY = 2  # messages queued before the sink: records in flight <= CAPACITY * batch
COLUMNS = ("id", "client_id", "date", "amount", "currency", "description")
SCHEMA = {
    "id": "INTEGER",
    "client_id": "INTEGER",
    "date": "TEXT",
    "amount": "REAL",
    "currency": "TEXT",
    "description": "TEXT",
}
UPSERT = (
    "INSERT INTO tx (id, client_id, date, amount, currency, description) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
    "client_id = excluded.client_id, date = excluded.date, amount = excluded.amount, "
    "currency = excluded.currency, description = excluded.description"
)
CREATE = (
    "CREATE TABLE tx (id INTEGER PRIMARY KEY NOT NULL, client_id INTEGER, date TEXT, "
    "amount REAL, currency TEXT, description TEXT)"
)


@dataclass
class CsvRun:
    """One measurement of one side."""

    rows: int
    seconds: float
    peak_kb: int  # the process's peak RSS during the run
    start_kb: int  # its RSS just before the run

    @property
    def growth_kb(self) -> int:
        return self.peak_kb - self.start_kb


def write_csv(path: Path, rows: int, seed: int = 7) -> None:
    """A deterministic transactions file of ``rows`` rows (plus the header)."""
    rnd = random.Random(seed)
    currencies = ("BRL", "USD", "EUR")
    with open(path, "w", newline="") as file:
        file.write(",".join(COLUMNS) + "\n")
        for start in range(0, rows, 100_000):
            file.write(
                "".join(
                    f"{i},{i % 5000},2024-{i % 12 + 1:02d}-{i % 28 + 1:02d},"
                    f"{rnd.random() * 1000:.2f},{currencies[i % 3]},Compra loja {i % 97}\n"
                    for i in range(start, min(rows, start + 100_000))
                )
            )


def _remove_db(db: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        try:
            os.remove(db + suffix)
        except FileNotFoundError:
            pass


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _rss_kb() -> int:
    return _status_kb("VmRSS") or 0


def _start() -> int:
    """Reset the peak RSS to the current RSS (Linux >= 4.0); return the RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pass
    return _rss_kb()


def _peak_kb() -> int:
    peak = _status_kb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# -- the two sides (each runs in a process of its own) --------------------------------------


def plain_loop(csv_path: str, db: str, batch: int, use_uvloop: bool) -> CsvRun:
    """The plain synchronous loop (sync sqlite3 on purpose: this is the yardstick)."""
    _remove_db(db)
    conn = sqlite3.connect(db, isolation_level="IMMEDIATE")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(CREATE)
    before = _start()
    started = time.perf_counter()
    count = 0
    with open(csv_path, newline="") as file:
        reader = csv.reader(file)
        next(reader)
        while rows := list(itertools.islice(reader, batch)):
            conn.executemany(UPSERT, rows)
            conn.commit()
            count += len(rows)
    seconds = time.perf_counter() - started
    peak = _peak_kb()
    conn.close()
    return CsvRun(count, seconds, peak, before)


def asyncpipe_serial(csv_path: str, db: str, batch: int, use_uvloop: bool) -> CsvRun:
    """``CsvSource -> SqliteSink``, the sink node with the default ``workers=1``."""
    return through_asyncpipe(csv_path, db, batch, use_uvloop, workers=1)


def asyncpipe_pipelined(csv_path: str, db: str, batch: int, use_uvloop: bool) -> CsvRun:
    """``CsvSource -> SqliteSink``, the sink node with ``workers=2``."""
    return through_asyncpipe(csv_path, db, batch, use_uvloop, workers=2)


def asyncpipe_dicts(csv_path: str, db: str, batch: int, use_uvloop: bool) -> CsvRun:
    """``CsvSource(records="dicts") -> SqliteSink``, ``workers=1``."""
    return through_asyncpipe(csv_path, db, batch, use_uvloop, workers=1, records="dicts")


def through_asyncpipe(
    csv_path: str,
    db: str,
    batch: int,
    use_uvloop: bool,
    *,
    workers: int,
    records: Literal["auto", "dicts", "lists"] = "auto",
) -> CsvRun:
    """``CsvSource -> SqliteSink``, the way the README shows it."""
    # Imported here, in the measuring process: the plain loop's process never loads asyncpipe.
    import asyncpipe
    from asyncpipe.connectors import CsvSource, SqliteSink

    _remove_db(db)

    source = CsvSource(csv_path, batch_size=batch, records=records)
    sink = SqliteSink(db, "tx", key="id", schema=SCHEMA)
    seconds, before, peak = asyncpipe.run(load(source, sink, workers), use_uvloop=use_uvloop)
    with sqlite3.connect(db) as conn:
        count = conn.execute("SELECT count(*) FROM tx").fetchone()[0]
    conn.close()
    return CsvRun(count, seconds, peak, before)


async def load(source: Any, sink: Any, workers: int) -> tuple[float, int, int]:
    """Run ``source -> sink`` (the sink node's ``workers``) to the end: (seconds, RSS
    before in kB, peak RSS in kB); raises on any dead letter."""
    from asyncpipe import HandlerNode, PipelineExecutor

    read = HandlerNode("read", source)
    save = HandlerNode("save", sink, [read], capacity=CAPACITY, workers=workers)
    executor = PipelineExecutor([read], [save])
    before = _start()
    started = time.perf_counter()
    await executor.run()
    seconds = time.perf_counter() - started
    peak = _peak_kb()
    if executor.dead_letters:
        raise RuntimeError(f"unexpected dead letters: {executor.dead_letters[:3]}")
    return seconds, before, peak


Side = Callable[[str, str, int, bool], CsvRun]
BASELINE = "plain loop"
JUDGED = "asyncpipe, workers=1"
PIPELINED = "asyncpipe, workers=2"
DICTS = "asyncpipe, dicts, workers=1"
#: The sides, baseline first: label -> function (run in a fresh process).
SIDES: dict[str, Side] = {
    BASELINE: plain_loop,
    JUDGED: asyncpipe_serial,
    PIPELINED: asyncpipe_pipelined,
    DICTS: asyncpipe_dicts,
}


# -- driving ------------------------------------------------------------------------------


@dataclass
class CsvResults:
    """Interleaved runs of the sides (the i-th run of each side ran in the same repeat)."""

    rows: int
    batch: int
    runs: dict[str, list[CsvRun]] = field(default_factory=lambda: {s: [] for s in SIDES})

    def rate(self, side: str) -> float:
        """Median rows/s."""
        return self.rows / statistics.median(r.seconds for r in self.runs[side])

    def ratios(self, side: str = JUDGED) -> list[float]:
        """The side's rows/s over the plain loop's, per repeat."""
        pairs = zip(self.runs[side], self.runs[BASELINE], strict=True)
        return [base.seconds / ours.seconds for ours, base in pairs]

    def ratio(self, side: str = JUDGED) -> float:
        return statistics.median(self.ratios(side))


class _Workload:
    def __init__(self, directory: Path, rows: int, batch: int, use_uvloop: bool) -> None:
        self.csv_path = str(directory / "transactions.csv")
        self.db = str(directory / "bench.db")
        self.use_uvloop = use_uvloop
        self.results = CsvResults(rows, batch)
        write_csv(Path(self.csv_path), rows)

    def measure(self, side: str) -> CsvRun:
        """Run one side once, in a fresh process; record and return the run."""
        run_side = SIDES[side]
        return measure_side(self.results, side, run_side, self.csv_path, self.db, self.use_uvloop)


def measure_side(
    results: CsvResults,
    side: str,
    run_side: Side,
    csv_path: str,
    target: str,
    use_uvloop: bool,
) -> CsvRun:
    """Run ``run_side`` once (CSV file, database, batch, uvloop) in a fresh process, check
    it stored every row, record the run in ``results`` and return it."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        run = pool.submit(run_side, csv_path, target, results.batch, use_uvloop).result()
    if run.rows != results.rows:
        raise RuntimeError(f"{side}: stored {run.rows} rows, not {results.rows}")
    results.runs[side].append(run)
    return run


@contextmanager
def csv_workload(rows: int, batch: int, use_uvloop: bool) -> Iterator[_Workload]:
    """A temporary directory holding the CSV file (written now) and the database."""
    with tempfile.TemporaryDirectory(prefix="asyncpipe-bench-") as tmp:
        yield _Workload(Path(tmp), rows, batch, use_uvloop)
