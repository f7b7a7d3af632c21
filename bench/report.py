"""The tables ``python -m bench`` prints at the end, each judged against its target."""

from __future__ import annotations

import statistics

from . import cpu, csv_postgres, csv_sqlite, windowed_workload
from .csv_sqlite import BASELINE, JUDGED, CsvResults
from .engine import ChainWorkload
from .measure import k, met, verdict
from .windowed_asyncpipe import DURABLE, IN_MEMORY
from .windowed_workload import WindowedWorkload

__all__ = ["report"]


def report(
    chains: list[ChainWorkload],
    cpu_load: cpu.CpuWorkload | None,
    csv: CsvResults | None,
    postgres: CsvResults | None = None,
    windowed: WindowedWorkload | None = None,
) -> bool:
    """Print the tables of the workloads that ran; return whether a target was missed
    (or a contender of the windowed workload other than Bytewax gave wrong results)."""
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
    if windowed is not None:
        failed |= _report_windowed(windowed)
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
    "batch is handed to the database thread\nwhile the previous one commits); dicts: "
    "CsvSource(records='dicts'), a dict per record\ninstead of the default's rows of values. "
    "The target is judged on workers=1 (the default)."
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


def _report_windowed(load: WindowedWorkload) -> bool:
    """Print the windowed aggregation table; return whether a target was missed or a fast
    contender's results differ from the reference."""
    spec = load.spec
    print(
        f"\nwindowed aggregation: {spec.events:,} events, {spec.keys:,} keys, "
        f"{len(load.reference.windows):,} windows of {spec.window_s} s, "
        f"lateness {spec.lateness_s:g} s, {load.reference.late} late"
    )
    print(f"{'contender':<34}{'events/s':>10}{'range':>18}{'ratio':>8}{'range':>13}  results")
    print("-" * 104)
    failed = False
    for name in load.sides:
        rates = load.rates[name]
        ratios = load.ratios(name)
        check = load.failed_check(name)
        failed |= check is not None
        results = check.summary() if check else f"equal to the reference ({len(rates)} runs)"
        print(
            f"{name:<34}{k(load.median_rate(name)):>10}"
            f"{k(min(rates)) + '-' + k(max(rates)):>18}{statistics.median(ratios):>7.2f}x"
            f"{f'{min(ratios):.2f}-{max(ratios):.2f}x':>13}  {results}"
        )
    if load.bytewax is not None:
        bw = load.bytewax
        label = f"Bytewax {bw.version}, first {bw.events:,}"
        print(f"{label:<34}{k(bw.rate):>10}{'(1 run)':>18}{'':>21}  {bw.check.summary()}")
    ref = load.reference
    print(f"{'plain loop (the reference)':<34}{k(spec.events / ref.seconds):>10}{'(1 run)':>18}")
    print(
        "ratio: events/s over the hand-written aggregator's in the same repeat (median, "
        "range);\nevents/s: median and range of the runs. Bytewax runs once, on the first "
        "events only\n(--bytewax-events); its wrong windows are its own finding, not judged."
    )
    return _judge_windowed(load) or failed


def _judge_windowed(load: WindowedWorkload) -> bool:
    if IN_MEMORY not in load.sides:
        print("asyncpipe: no contender yet (bench/windowed_asyncpipe.py): no target judged")
        return False
    ratio = statistics.median(load.ratios(IN_MEMORY))
    rate = load.median_rate(IN_MEMORY)
    target_rate = windowed_workload.TARGET_RATE
    failed = not met(ratio, windowed_workload.TARGET_RATIO) or rate < target_rate
    print(
        f"target: {IN_MEMORY} >= {windowed_workload.TARGET_RATIO:.2f}x hand-written "
        f"({verdict(ratio, windowed_workload.TARGET_RATIO)}) and >= {k(target_rate)} "
        f"events/s ({'ok' if rate >= target_rate else 'MISSED'})"
    )
    if DURABLE in load.sides:
        # In-memory events/s over durable's = durable run time over in-memory's.
        cost = statistics.median(load.ratios(IN_MEMORY, over=DURABLE))
        target = windowed_workload.TARGET_DURABLE
        ok = round(cost, 2) <= target
        failed |= not ok
        print(
            f"target: {DURABLE} run time <= {target:.2f}x in-memory's: {cost:.2f}x "
            f"({'ok' if ok else 'MISSED'})"
        )
    return failed
