"""The tables ``python -m bench`` prints at the end, each judged against its target."""

from __future__ import annotations

import statistics

from . import cpu, csv_postgres, csv_sqlite
from .csv_sqlite import BASELINE, JUDGED, CsvResults
from .engine import ChainWorkload
from .measure import k, met, verdict

__all__ = ["report"]


def report(
    chains: list[ChainWorkload],
    cpu_load: cpu.CpuWorkload | None,
    csv: CsvResults | None,
    postgres: CsvResults | None = None,
) -> bool:
    """Print the tables of the workloads that ran; return whether a target was missed."""
    failed = False
    if any(chain.pairs.baseline for chain in chains):
        failed |= _report_chains(chains)
    if cpu_load is not None:
        failed |= _report_cpu(cpu_load)
    if csv is not None:
        failed |= _report_csv(csv, "CSV -> SQLite upsert", csv_sqlite.TARGET, _SQLITE_NOTE)
    if postgres is not None:
        failed |= _report_csv(
            postgres, "CSV -> PostgreSQL upsert", csv_postgres.TARGET, _POSTGRES_NOTE
        )
    print(
        "\nratio, speed-up (judged against the target): median of the ratios of the pairs run"
        "\nback to back (asyncpipe/baseline; 2 workers/1 worker). best/best: best run of one"
        "\nside over best run of the other; range: the lowest and highest pair."
        + (f" cpu: {cpu.PAIRS} pairs per repeat." if cpu_load is not None else "")
    )
    return failed


def _report_chains(chains: list[ChainWorkload]) -> bool:
    failed = False
    columns = f"{'raw asyncio':>15}{'asyncpipe':>15}{'ratio':>8}{'best/best':>11}{'target':>8}"
    print(f"\n{'4-stage chain, items/s':<26}{columns}  result")
    print("-" * 91)
    for chain in chains:
        pairs, target = chain.pairs, chain.target
        if not pairs.baseline:
            continue
        ratio = pairs.ratio()
        failed |= not met(ratio, target)
        print(
            f"{chain.label:<26}{k(statistics.median(pairs.baseline)):>15}"
            f"{k(statistics.median(pairs.candidate)):>15}{ratio:>7.2f}x"
            f"{pairs.best_ratio():>10.2f}x{target:>7.2f}x  {verdict(ratio, target)}"
        )
    return failed


def _report_cpu(load: cpu.CpuWorkload) -> bool:
    columns = f"{'1 worker':>15}{'2 workers':>15}{'speed-up':>9}{'best/best':>10}{'target':>8}"
    print(f"\n{'cpu=True stage, msg/s':<26}{columns}  result")
    print("-" * 91)
    speedup = load.pairs.ratio()
    for label, pairs, judged in (
        ("asyncpipe", load.pairs, f"{cpu.TARGET:>7.2f}x  {verdict(speedup, cpu.TARGET)}"),
        ("raw ProcessPoolExecutor", load.raw_pairs, f"{'':>8}  (what the machine gives)"),
    ):
        if pairs.baseline:
            print(
                f"{label:<26}{statistics.median(pairs.baseline):>15.1f}"
                f"{statistics.median(pairs.candidate):>15.1f}{pairs.ratio():>8.2f}x"
                f"{pairs.best_ratio():>9.2f}x{judged}"
            )
    print(
        "steady state after one warm-up message per worker; asyncpipe's pool start-up and "
        f"handler loading\n(excluded) took {1000 * statistics.median(load.startups):.0f} ms "
        "median"
    )
    return not met(speedup, cpu.TARGET)


_SQLITE_NOTE = (
    "plain loop: csv.reader + executemany +\ncommit per batch. workers: the sink node's (2: a "
    "batch is handed to the database thread\nwhile the previous one commits); the target is "
    "judged on workers=1 (the default)."
)
_POSTGRES_NOTE = (
    "plain loop: csv.reader, the same\nconverters, asyncpg and the sink's unnest upsert per "
    "batch on one connection. workers: the\nsink node's (= its connections); the target is "
    "judged on workers=1 (the default)."
)


def _report_csv(csv: CsvResults, title: str, target: float, note: str) -> bool:
    """Print a CSV -> database table; return whether the target was missed."""
    print(
        f"\n{title:<26}{'rows/s':>10}{'seconds':>9}{'peak RSS':>10}"
        f"{'growth':>8}{'ratio':>8}{'range':>12}{'target':>8}  result"
    )
    print("-" * 97)
    for side, runs in csv.runs.items():
        seconds = statistics.median(run.seconds for run in runs)
        memory = (
            f"{max(run.peak_kb for run in runs) / 1024:>7.0f} MB"
            f"{max(run.growth_kb for run in runs) / 1024:>5.0f} MB"
        )
        judged = ""
        if side != BASELINE:
            ratios = csv.ratios(side)
            judged = f"{csv.ratio(side):>7.2f}x{min(ratios):>6.2f}-{max(ratios):.2f}x"
            if side == JUDGED:
                judged += f"{target:>7.2f}x  {verdict(csv.ratio(), target)}"
        print(f"{side:<26}{k(csv.rate(side)):>10}{seconds:>9.2f}{memory}{judged}")
    print(
        f"{csv.rows:,} rows, {csv.batch}-row transactions; each run a fresh process. peak RSS: "
        "the\nprocess's resident size at its highest during the run (VmHWM; the largest of "
        "the runs);\ngrowth: that minus its RSS just before the run. " + note
    )
    return not met(csv.ratio(), target)
