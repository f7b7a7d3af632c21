"""Connector benchmark: CSV -> SQLite upsert through asyncpipe vs a plain synchronous loop.

``python -m asyncpipe._bench_connectors [--rows N] [--repeat K] [--batch B] [--quick] [--check]``

Both sides read the same generated CSV file (``id,client_id,date,amount,currency,
description``) and upsert every row, ``--batch`` rows per transaction, into the same table
(``id INTEGER PRIMARY KEY``, WAL, ``synchronous=NORMAL``):

* **asyncpipe**: ``CsvSource(path, batch_size=B)`` -> ``SqliteSink(db, "tx", key="id",
  schema=...)``, two nodes run by a :class:`PipelineExecutor` (uvloop when installed).
  Records are dicts; the sink commits each batch before its handler returns.
* **baseline**: what one writes without a framework -- ``csv.reader`` over the open file,
  ``itertools.islice`` batches of row lists, ``sqlite3.executemany`` of the same upsert and
  a ``commit`` per batch, all synchronous. This is the yardstick of the target.
* **dict baseline**: the same loop with ``csv.DictReader`` and named parameters, i.e. the
  plain loop producing the dict records asyncpipe's sources produce (for context).

Every measurement runs in a fresh process (spawned), so each side starts cold and its
peak memory is its own: ``peak RSS`` is the process's high-water mark, ``growth`` that
minus the resident size just before the run (what the run itself needed). The two sides
alternate, and the ratio is the median of the per-repeat ratios (the machine is shared
and noisy). Target: asyncpipe >= 0.8x the baseline.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import random
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

__all__ = ["TARGET", "main", "run_connectors_benchmark"]

TARGET = 0.8
BATCH = 500  # the connectors' default batch_size
CAPACITY = 2  # messages queued before the sink: records in flight <= CAPACITY * BATCH
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


def _rss_kb() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def _peak_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# -- the two sides (each runs in its own process) -----------------------------------------


def baseline(csv_path: str, db: str, batch: int) -> dict[str, Any]:
    """The plain synchronous loop (sync sqlite3 on purpose: this is the yardstick)."""
    _remove_db(db)
    conn = sqlite3.connect(db, isolation_level="IMMEDIATE")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(CREATE)
    before = _rss_kb()
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
    conn.close()
    return {"rows": count, "seconds": seconds, "peak_kb": _peak_kb(), "start_kb": before}


def dict_baseline(csv_path: str, db: str, batch: int) -> dict[str, Any]:
    """The plain loop with dict records (sync sqlite3 on purpose: a yardstick)."""
    _remove_db(db)
    conn = sqlite3.connect(db, isolation_level="IMMEDIATE")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(CREATE)
    named = UPSERT.replace("?, ?, ?, ?, ?, ?", ", ".join(f":{c}" for c in COLUMNS))
    before = _rss_kb()
    started = time.perf_counter()
    count = 0
    with open(csv_path, newline="") as file:
        reader = csv.DictReader(file)
        while rows := list(itertools.islice(reader, batch)):
            conn.executemany(named, rows)
            conn.commit()
            count += len(rows)
    seconds = time.perf_counter() - started
    conn.close()
    return {"rows": count, "seconds": seconds, "peak_kb": _peak_kb(), "start_kb": before}


def through_asyncpipe(csv_path: str, db: str, batch: int) -> dict[str, Any]:
    from asyncpipe import HandlerNode, PipelineExecutor, run
    from asyncpipe.connectors import CsvSource, SqliteSink

    _remove_db(db)

    async def pipeline() -> dict[str, Any]:
        read = HandlerNode("read", CsvSource(csv_path, batch_size=batch))
        save = HandlerNode(
            "save", SqliteSink(db, "tx", key="id", schema=SCHEMA), [read], capacity=CAPACITY
        )
        executor = PipelineExecutor([read], [save])
        before = _rss_kb()
        started = time.perf_counter()
        await executor.run()
        seconds = time.perf_counter() - started
        if executor.dead_letters:
            raise RuntimeError(f"unexpected dead letters: {executor.dead_letters[:3]}")
        return {"seconds": seconds, "start_kb": before}

    result = run(pipeline())
    with sqlite3.connect(db) as conn:
        result["rows"] = conn.execute("SELECT count(*) FROM tx").fetchone()[0]
    result["peak_kb"] = _peak_kb()
    return result


def _loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


# -- the benchmark --------------------------------------------------------------------------


def run_connectors_benchmark(
    rows: int = 1_000_000, quick: bool = False, *, repeat: int | None = None, batch: int = BATCH
) -> list[dict[str, Any]]:
    """Measure CSV -> SQLite upsert of ``rows`` rows both ways; return one result row per
    side: ``workload``, ``side``, ``rows``, ``rows_per_s`` (median), ``seconds``
    (median), ``peak_rss_mb``, ``growth_mb``, and on the asyncpipe row ``ratio`` (median of
    per-repeat ratios), ``target`` and ``met``. ``quick`` runs one repeat (default 3)."""
    repeat = repeat or (1 if quick else 3)
    context = get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="asyncpipe-bench-") as tmp:
        csv_path = str(Path(tmp) / "transactions.csv")
        write_csv(Path(csv_path), rows)
        db = str(Path(tmp) / "bench.db")
        sides = {
            "baseline": baseline,
            "dict baseline": dict_baseline,
            "asyncpipe": through_asyncpipe,
        }
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
        for r in range(repeat):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for side in order:
                # A fresh process per measurement: cold start, and its own peak memory.
                with ProcessPoolExecutor(1, mp_context=context) as pool:
                    result = pool.submit(sides[side], csv_path, db, batch).result()
                if result["rows"] != rows:
                    raise RuntimeError(f"{side}: stored {result['rows']} rows, not {rows}")
                runs[side].append(result)
    return _summarise(runs, rows, batch)


def _summarise(
    runs: dict[str, list[dict[str, Any]]], rows: int, batch: int
) -> list[dict[str, Any]]:
    def ratios(baseline: str) -> list[float]:
        return [
            b["seconds"] / a["seconds"]
            for a, b in zip(runs["asyncpipe"], runs[baseline], strict=True)
        ]

    results = []
    for side, samples in runs.items():
        seconds = statistics.median(s["seconds"] for s in samples)
        row: dict[str, Any] = {
            "workload": f"CSV -> SQLite upsert, {batch}-row batches",
            "side": side,
            "rows": rows,
            "rows_per_s": rows / seconds,
            "seconds": seconds,
            "peak_rss_mb": max(s["peak_kb"] for s in samples) / 1024,
            "growth_mb": max(s["peak_kb"] - s["start_kb"] for s in samples) / 1024,
        }
        if side == "asyncpipe":
            ratio = statistics.median(ratios("baseline"))
            row.update(ratio=ratio, target=TARGET, met=round(ratio, 2) >= TARGET)
            row["ratio_dict_baseline"] = statistics.median(ratios("dict baseline"))
            row["loop"] = _loop_name()
            row["capacity"] = CAPACITY
        results.append(row)
    return results


def format_results(results: Sequence[dict[str, Any]]) -> str:
    lines = [
        f"{'CSV -> SQLite upsert':<24}{'rows/s':>12}{'seconds':>10}{'peak RSS':>11}"
        f"{'growth':>9}  result",
        "-" * 80,
    ]
    for row in results:
        verdict = ""
        if "ratio" in row:
            mark = "met" if row["met"] else "NOT met"
            verdict = (
                f"{row['ratio']:.2f}x baseline (target >= {row['target']}x: {mark}), "
                f"{row['ratio_dict_baseline']:.2f}x dict baseline"
            )
        lines.append(
            f"{row['side']:<24}{row['rows_per_s']:>12,.0f}{row['seconds']:>10.2f}"
            f"{row['peak_rss_mb']:>8.0f} MB{row['growth_mb']:>6.0f} MB  {verdict}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asyncpipe._bench_connectors")
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the CSV file")
    parser.add_argument("--repeat", type=int, default=None, help="measurements per side")
    parser.add_argument("--batch", type=int, default=BATCH, help="rows per batch/transaction")
    parser.add_argument(
        "--quick", action="store_true", help="200,000 rows, one repeat (a smoke run)"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the target is missed")
    args = parser.parse_args(argv)
    rows = 200_000 if args.quick and args.rows == 1_000_000 else args.rows
    sys.stdout.write(
        f"CSV -> SQLite upsert of {rows:,} rows, batches of {args.batch}, "
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n"
    )
    sys.stdout.flush()
    results = run_connectors_benchmark(rows, args.quick, repeat=args.repeat, batch=args.batch)
    sys.stdout.write(format_results(results) + "\n")
    missed = not all(r.get("met", True) for r in results)
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
