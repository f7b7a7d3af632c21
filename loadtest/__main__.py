"""``python -m loadtest``: see the package docstring and ``--help``."""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from asyncpipe import run

from ._load import Plan, Sample, check_plan, new_run_base, run_level
from ._report import check_integrity, summarise, table, write
from ._server import DemoServer

DEFAULT_CLIENTS = "1,2,5,10,15,20"


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in --help, in words where a value would not say it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest",
        description="Sweep concurrent clients against the ingestion service; time every "
        "round trip; check every acknowledged item was stored exactly once.",
        formatter_class=_Help,
    )
    parser.add_argument(
        "--target",
        help="host:port of a running server (default: start the "
        "demo server on 127.0.0.1 with a fresh work directory)",
    )
    parser.add_argument(
        "--results-db",
        type=Path,
        help="with --target: the server's results database, for the integrity check "
        "(default: none, integrity not checked)",
    )
    parser.add_argument(
        "--clients",
        default=DEFAULT_CLIENTS,
        help="levels of concurrent clients, comma-separated",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per level")
    parser.add_argument(
        "--requests",
        type=int,
        help="measured requests per client per level, instead of --duration (still bounded "
        "by it) (default: as many as --duration allows)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=2.0,
        help="seconds of warm-up per level, not measured",
    )
    parser.add_argument("--batch-size", type=int, default=200, help="transactions per request")
    parser.add_argument(
        "--rpc",
        choices=("unary", "stream"),
        default="unary",
        help="one batch per unary call, or batches on one bidirectional stream per client",
    )
    parser.add_argument(
        "--procs",
        type=int,
        default=1,
        help="spread the clients over this many processes",
    )
    parser.add_argument(
        "--server-processes",
        type=int,
        default=1,
        help="server processes of the started demo server (its --processes: they share "
        "the port, the results and the state)",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds allowed per call")
    parser.add_argument(
        "--out", type=Path, help="output directory (default: ./loadtest-results/<timestamp>/)"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="the started demo server's work directory (default: a new temporary one, "
        "removed after)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short sweep: 1.5 s per level after 0.5 s of warm-up (default: off)",
    )
    args = parser.parse_args(argv)
    try:
        args.levels = [int(c) for c in args.clients.split(",") if c.strip()]
    except ValueError:
        parser.error(f"--clients: expected numbers separated by commas, got {args.clients!r}")
    if not args.levels or min(args.levels) < 1:
        parser.error("--clients: every level needs at least 1 client")
    if args.quick:
        args.duration, args.warmup = 1.5, 0.5
    for name in ("duration", "timeout"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name} must be > 0")
    if args.warmup < 0 or args.batch_size < 1 or args.procs < 1 or args.server_processes < 1:
        parser.error("--warmup must be >= 0, --batch-size, --procs, --server-processes >= 1")
    if args.target and args.server_processes != 1:
        parser.error("--server-processes: for the started server, not with --target")
    if args.requests is not None and args.requests < 1:
        parser.error("--requests must be >= 1")
    if args.target and not args.target.startswith(("127.", "localhost:", "[::1]:")):
        parser.error("--target: this tool only sends to loopback (127.0.0.1, localhost)")
    try:
        check_plan(len(args.levels), max(args.levels), args.batch_size)
    except ValueError as exc:
        parser.error(str(exc))
    if args.out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        args.out = Path("loadtest-results") / stamp
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Piped output gets a wide console: the table must not be cut to 80 columns.
    console = Console() if sys.stdout.isatty() else Console(width=140)
    server: DemoServer | None = None
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="loadtest-demo-"))
    target, database = args.target, args.results_db
    all_samples: list[Sample] = []
    levels = []
    run_base = new_run_base()
    try:
        if target is None:
            extra = ["--processes", str(args.server_processes)]
            server = DemoServer(workdir, extra if args.server_processes > 1 else None)
            with console.status("starting the demo server..."):
                target = run(server.ready())
            database = server.results
            console.print(f"demo server on {target} (work directory {workdir})")
        for index, clients in enumerate(args.levels):
            plan = Plan(
                target=target,
                run_base=run_base,
                level=index,
                clients=clients,
                batch_size=args.batch_size,
                rpc=args.rpc,
                warmup=args.warmup,
                duration=args.duration,
                requests=args.requests,
                timeout=args.timeout,
                procs=min(args.procs, clients),
            )
            with console.status(f"{clients} client(s)..."):
                samples = run_level(plan)
            all_samples.extend(samples)
            level = summarise(clients, samples)
            levels.append(level)
            console.print(
                f"{clients:>3} client(s): {level.requests:,} requests, "
                f"{sum(level.errors.values()):,} errors, {level.items_per_second:,.0f} items/s, "
                f"p50 {level.rtt_ms['p50'] or 0:.1f} ms, p99 {level.rtt_ms['p99'] or 0:.1f} ms"
            )
    finally:
        if server is not None:
            code, err = run(server.stop())
            if code != 0:
                console.print(f"[red]the demo server exited with {code}[/]\n{err[-2000:]}")
    integrity = (
        check_integrity(database, all_samples, run_base, drained=server is not None)
        if levels
        else None
    )
    if server is not None and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)  # the temporary one we made
    if integrity is None:
        return 1
    table(levels, integrity, console)
    config: dict[str, Any] = {
        "target": target,
        "started_server": server is not None,
        "levels": args.levels,
        "duration": args.duration,
        "warmup": args.warmup,
        "requests": args.requests,
        "quick": args.quick,
        "batch_size": args.batch_size,
        "rpc": args.rpc,
        "procs": args.procs,
        "server_processes": args.server_processes,
        "timeout": args.timeout,
    }
    paths = write(args.out, config, levels, integrity)
    console.print("wrote " + ", ".join(str(p) for p in paths))
    return 0 if integrity.ok else 1


if __name__ == "__main__":
    sys.exit(main())
