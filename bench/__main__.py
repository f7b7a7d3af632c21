"""``python -m bench [--only WORKLOAD] [--repeat K] [--quick] [--check]``: the engine's
throughput against raw baselines, measured in one run.

Workloads (``--only``, repeatable; all by default): ``per-item`` and ``batched``
(:mod:`bench.engine`), ``cpu`` (:mod:`bench.cpu`), ``csv`` (:mod:`bench.csv_sqlite`),
``postgres`` (:mod:`bench.csv_postgres`: CSV -> PostgreSQL, on ``DATABASE_URL`` or a
server started from the pgserver wheel), ``windowed`` (:mod:`bench.windowed_workload`),

``dask`` (:mod:`bench.dask_cpu`: the cpu stage on a local Dask cluster, by message size).
Repeats alternate which side goes first, so drift hits both sides alike; the tables
(:mod:`bench.report`) give medians. The ingestion benchmark is ``python -m bench.ingest``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from asyncpipe import DEFAULT_CAPACITY

from .cpu import CpuWorkload, calibrate_cpu
from .csv_postgres import PG_SIDES, postgres_workload
from .csv_sqlite import BASELINE, SIDES, csv_workload
from .dask_cpu import DaskWorkload, dask_cluster
from .engine import TARGET_BATCHED, TARGET_PER_ITEM, ChainWorkload
from .measure import loop_name
from .report import report
from .windowed import WindowedSpec
from .windowed_workload import WindowedWorkload

__all__ = ["main", "parse_args"]

WORKLOADS = ("per-item", "batched", "cpu", "csv", "postgres", "windowed", "dask")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="asyncpipe throughput vs raw asyncio and a plain CSV -> SQLite loop, "
        "process-pool speed-up, and a windowed keyed aggregation vs a hand-written asyncio "
        "aggregator and Bytewax.",
        epilog="The gRPC ingestion benchmark: python -m bench.ingest --help.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--only",
        choices=WORKLOADS,
        action="append",
        default=argparse.SUPPRESS,  # not shown as None: no --only runs every workload
        help="run only this workload (repeatable; default: all of them)",
    )
    add("--items", type=int, default=200_000, help="items per chain pass")
    add(
        "--batch",
        type=int,
        default=500,
        help="items per batched message (csv: per commit; windowed: events per batch)",
    )
    add("--repeat", type=int, default=5, help="repeats (medians are reported)")
    add("--min-seconds", type=float, default=0.5, help="least measured time per chain sample")
    add("--cpu-messages", type=int, default=80, help="messages per cpu run")
    add("--cpu-ms", type=float, default=15.0, help="CPU work per message, ms")
    add("--rows", type=int, default=1_000_000, help="csv, postgres: rows upserted")
    add("--events", type=int, default=1_000_000, help="windowed: events aggregated")
    add("--keys", type=int, default=10_000, help="windowed: distinct keys")
    add(
        "--bytewax-events",
        type=int,
        default=100_000,
        help="windowed: Bytewax runs once, on the first N events (all 1,000,000 take "
        "about 10 minutes; 0 skips it)",
    )
    add("--no-raw-cpu", action="store_true", help="skip the raw process-pool reference")
    add(
        "--dask-ms",
        default="0.1,1,2,5,10,20,50",
        help="dask: CPU work per message to sweep, ms, comma-separated",
    )
    add("--no-uvloop", action="store_true", help="use the default event loop")
    add(
        "--quick",
        action="store_true",
        help="a short smoke run: at most 20,000 items, 1 repeat, 0.05 s samples, "
        "12 cpu messages of 10 ms, 100,000 rows, 100,000 windowed events (5,000 for Bytewax), "
        "dask at 1 and 15 ms",
    )
    add("--check", action="store_true", help="exit with status 1 if a target is missed")
    args = parser.parse_args(argv)
    args.only = getattr(args, "only", None) or list(WORKLOADS)
    if args.quick:
        args.items = min(args.items, 20_000)
        args.repeat = 1
        args.min_seconds = min(args.min_seconds, 0.05)
        args.cpu_messages = min(args.cpu_messages, 12)
        args.cpu_ms = min(args.cpu_ms, 10.0)
        args.rows = min(args.rows, 100_000)
        args.events = min(args.events, 100_000)
        args.bytewax_events = min(args.bytewax_events, 5_000)
        args.dask_ms = "1,15"
    try:
        args.dask_ms = [float(ms) for ms in str(args.dask_ms).split(",")]
    except ValueError:
        parser.error("--dask-ms takes numbers separated by commas")
    if min(args.dask_ms) <= 0:
        parser.error("--dask-ms must be > 0")
    sizes = (args.items, args.batch, args.repeat, args.cpu_messages, args.rows, args.events)
    if min(*sizes, args.keys) < 1:
        parser.error(
            "--items, --batch, --repeat, --cpu-messages, --rows, --events and --keys must be >= 1"
        )
    if args.bytewax_events < 0:
        parser.error("--bytewax-events must be >= 0")
    return args


def _measure_upserts(name: str, load: Any, sides: Iterable[str], flip: bool) -> str:
    """One repeat of an upsert workload (CSV -> SQLite or PostgreSQL), sides in turn."""
    for side in list(sides)[::-1] if flip else list(sides):
        load.measure(side)
    ratios = [
        f"{side.removeprefix('asyncpipe, ')} {load.results.ratios(side)[-1]:.2f}x"
        for side in sides
        if side != BASELINE
    ]
    return f"{name} {', '.join(ratios)}"


@dataclass
class _Loads:
    """The workloads of a run (None: not asked for)."""

    chains: list[ChainWorkload]
    cpu: CpuWorkload | None
    csv: Any
    postgres: Any
    windowed: WindowedWorkload | None
    dask: DaskWorkload | None

    def measure(self, r: int, min_seconds: float, use_uvloop: bool) -> list[str]:
        """Repeat ``r`` of every workload; what to print of it."""
        flip = r % 2 == 1  # alternate who goes first, so drift hits both sides alike
        line = [chain.measure(use_uvloop, min_seconds, flip) for chain in self.chains]
        if self.cpu is not None:
            line += self.cpu.measure(use_uvloop, r)
        if self.csv is not None:
            line.append(_measure_upserts("csv", self.csv, SIDES, flip))
        if self.postgres is not None:
            line.append(_measure_upserts("postgres", self.postgres, PG_SIDES, flip))
        if self.windowed is not None:
            line.append(self.windowed.measure(use_uvloop, flip))
        if self.dask is not None:
            line += self.dask.measure(use_uvloop, r)
        return line


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    use_uvloop = not args.no_uvloop
    workloads = set(args.only)
    chains = [
        ChainWorkload(label, args.items, batch, target)
        for name, label, batch, target in (
            ("per-item", "per-item (1 item/msg)", None, TARGET_PER_ITEM),
            ("batched", f"batched ({args.batch} items/msg)", args.batch, TARGET_BATCHED),
        )
        if name in workloads
    ]
    cpu = None
    if "cpu" in workloads:
        cpu = CpuWorkload(args.cpu_messages, calibrate_cpu(args.cpu_ms), raw=not args.no_raw_cpu)
    print(
        f"bench: Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"loop={loop_name(use_uvloop)}, items={args.items:,}, batch={args.batch}, "
        f"repeat={args.repeat}, capacity={DEFAULT_CAPACITY}, "
        f"cpu={args.cpu_messages} messages x {args.cpu_ms:g} ms, csv/postgres={args.rows:,} rows, "
        f"windowed={args.events:,} events/{args.keys:,} keys "
        f"(Bytewax: {args.bytewax_events:,})",
        flush=True,
    )
    windowed = None
    if "windowed" in workloads:
        spec = WindowedSpec(events=args.events, keys=args.keys)
        windowed = WindowedWorkload(spec, args.batch, args.bytewax_events)
    with contextlib.ExitStack() as stack:
        csv = postgres = None
        if "csv" in workloads:
            csv = stack.enter_context(csv_workload(args.rows, args.batch, use_uvloop))
        if "postgres" in workloads:
            postgres = stack.enter_context(postgres_workload(args.rows, args.batch, use_uvloop))
        dask = None
        if "dask" in workloads:
            cluster = stack.enter_context(dask_cluster())
            dask = DaskWorkload(args.dask_ms, cluster.scheduler_address)
        loads = _Loads(chains, cpu, csv, postgres, windowed, dask)
        for r in range(args.repeat):
            line = loads.measure(r, args.min_seconds, use_uvloop)
            print(f"  repeat {r + 1}/{args.repeat}: " + ", ".join(line), flush=True)
    if windowed is not None:
        windowed.run_bytewax()
    if dask is not None:
        dask.report()
    failed = report(
        chains,
        cpu,
        csv.results if csv is not None else None,
        postgres.results if postgres is not None else None,
        windowed,
    )
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
