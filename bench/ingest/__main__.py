"""``python -m bench.ingest``: IngestServer on a no-op pipeline vs a raw grpc.aio echo.

See :mod:`bench.ingest` for what is measured and how.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Sequence

import grpc

from ..measure import in_loop, loop_name
from .costs import conversion_costs
from .load import measure, request_payloads
from .report import HEADER, LEGEND, Level
from .servers import SIDES, ServerProcess

__all__ = ["main", "parse_args"]


def _levels(text: str) -> list[int]:
    return [int(c) for c in text.split(",")]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ingest",
        description="IngestServer on a no-op pipeline vs a raw grpc.aio echo of the same calls.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--rpc", choices=("unary", "stream", "both"), default="unary", help="the calls made")
    add("--concurrency", type=_levels, default="1,10,50", help="comma-separated calls in flight")
    add("--seconds", type=float, default=3.0, help="measured seconds per run")
    add("--warmup", type=float, default=0.5, help="unmeasured seconds per run")
    add("--pairs", type=int, default=2, help="(raw, asyncpipe, asyncpipe, raw) runs per level")
    add("--items", type=int, default=200, help="items per batch")
    add("--batches", type=int, default=500, help="distinct requests to cycle")
    add("--no-uvloop", action="store_true", help="use the default event loop")
    add(
        "--quick",
        action="store_true",
        help="a short smoke run: 0.5 s runs after 0.2 s, 1 pair, 100 batches",
    )
    add("--check", action="store_true", help="exit 1 if a ratio is below target")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = min(args.seconds, 0.5)
        args.warmup = min(args.warmup, 0.2)
        args.pairs = 1
        args.batches = min(args.batches, 100)
    if min([args.pairs, args.items, args.batches, *args.concurrency]) < 1 or args.seconds <= 0:
        parser.error("--concurrency, --pairs, --items, --batches and --seconds must be > 0")
    if max(args.concurrency) > args.batches:
        parser.error("--batches must be at least the highest --concurrency")
    return args


async def bench(args: argparse.Namespace, servers: dict[str, ServerProcess]) -> list[Level]:
    """Every level of every rpc asked for; a row printed as each level completes."""
    rpcs = ("unary", "stream") if args.rpc == "both" else (args.rpc,)
    levels = []
    for rpc in rpcs:
        payloads = request_payloads(args.batches, args.items, rpc == "stream")
        for concurrency in args.concurrency:
            level = Level(rpc, concurrency)
            for _ in range(args.pairs):
                for side in ("raw", "asyncpipe", "asyncpipe", "raw"):
                    sample = await measure(
                        servers[side],
                        rpc,
                        payloads,
                        args.items,
                        concurrency,
                        args.warmup,
                        args.seconds,
                    )
                    if sample.errors:
                        raise RuntimeError(f"{side}: {sample.errors} replies were not successes")
                    level.samples[side].append(sample)
            print(level.row(args.items), flush=True)
            levels.append(level)
    return levels


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    use_uvloop = not args.no_uvloop
    servers = {side: ServerProcess.start(side, use_uvloop) for side in SIDES}
    pids = ", ".join(f"{side} {server.process.pid}" for side, server in servers.items())
    try:
        print(
            f"bench.ingest: Python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs, grpcio {grpc.__version__}, "
            f"loop={loop_name(use_uvloop)}, {args.items}-item batches, "
            f"{args.seconds:g}s per run after {args.warmup:g}s warm-up, "
            f"{args.pairs} x (raw, asyncpipe, asyncpipe, raw) per level; server pids: {pids}",
            flush=True,
        )
        print(LEGEND)
        print(HEADER, flush=True)
        levels = in_loop(bench(args, servers), use_uvloop)
    finally:
        for server in servers.values():
            server.stop()
    costs = conversion_costs(request_payloads(min(args.batches, 50), args.items, stream=False))
    parse_us = costs.pop("parse")
    print(
        f"per {args.items}-item batch, on top of parsing it ({parse_us:.0f} µs): "
        + ", ".join(f"{name} {us - parse_us:.0f} µs" for name, us in costs.items())
        + " -- server CPU the raw side does not spend"
    )
    return 1 if args.check and any(level.missed() for level in levels) else 0


if __name__ == "__main__":
    sys.exit(main())
