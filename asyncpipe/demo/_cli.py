"""The demo's command line (``python -m asyncpipe.demo --help``): its options, their
defaults and the checks between them."""

from __future__ import annotations

import argparse
import datetime
import math
from collections.abc import Sequence
from pathlib import Path

from ._database import open_results
from ._domain import RATES
from ._pipeline import DEDUPE_TTL

__all__ = ["parse_args"]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m asyncpipe.demo",
        description="The original's bank pipeline on asyncpipe: clients, transactions and "
        "scores from SQLite, an inbox of TXT/CSV files, a timer and (with --serve) gRPC, "
        "normalised, classified, converted, scored by a model, aggregated into per-client "
        "profiles, stored in SQLite.",
        formatter_class=_Help,
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("asyncpipe-demo"),
        help="where the inputs are generated (or reused) and out/ is written",
    )
    parser.add_argument(
        "--seed", type=int, default=42, help="seed of the generated data and of the model"
    )
    parser.add_argument(
        "--as-of",
        type=datetime.date.fromisoformat,
        default=datetime.date.today(),
        help="the date results are computed as of (YYYY-MM-DD), today if not given",
    )
    parser.add_argument(
        "--clients", type=_positive, default=10_000, help="clients in the generated database"
    )
    parser.add_argument(
        "--transactions",
        type=_positive,
        default=100_000,
        help="historical transactions (with category) in the database",
    )
    parser.add_argument(
        "--new",
        type=_positive,
        default=20_000,
        help="new transactions (no category) across the inbox's TXT files",
    )
    parser.add_argument(
        "--rate",
        action="append",
        default=[],
        metavar="CUR=RATE",
        help="BRL per unit of a currency, repeatable (default: "
        + " ".join(f"{code}={rate:g}" for code, rate in RATES.items())
        + ")",
    )
    parser.add_argument(
        "--workers",
        type=_positive,
        default=None,
        help="worker processes for the risk model, with --risk-in-pool or --dask local "
        "(default: the CPU count)",
    )
    parser.add_argument(
        "--risk-in-pool",
        action="store_true",
        help="run the risk model in worker processes (cpu=True) rather than on the event "
        "loop: a showcase of offloading, slower for this small model (default: off)",
    )
    parser.add_argument(
        "--dask",
        default=None,
        metavar="ADDRESS",
        help="run the risk model on a Dask cluster: a scheduler's address (tcp://host:8786), "
        "or 'local' to start a LocalCluster of --workers worker processes on 127.0.0.1 for "
        "the run (needs the dask extra; default: off)",
    )
    parser.add_argument(
        "--database",
        default="sqlite",
        metavar="URL",
        help="where the results, the dead letters and the aggregator's state live: sqlite "
        "(out/results.db and out/state.db) or a postgresql://user:password@host/db URL "
        "(needs the postgres extra; the demo drops and creates its tables there)",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="keep running with the gRPC service and the inbox watcher until Ctrl-C, then "
        "drain; started again on the same work directory, it resumes from what it "
        "acknowledged (a run without --serve starts over)",
    )
    parser.add_argument(
        "--dedupe-ttl",
        type=float,
        default=DEDUPE_TTL,
        metavar="SECONDS",
        help="how long the aggregator remembers a batch it applied, so that the same batch "
        "sent again (same batch id) is not counted twice",
    )
    parser.add_argument(
        "--processes",
        type=_positive,
        default=1,
        help="with --serve: server processes sharing the gRPC port, the results and the "
        "state (its shared mode); a crashed one is restarted, one SIGTERM stops all "
        "(docs/processes.md)",
    )
    parser.add_argument("--port", type=int, default=50051, help="gRPC port with --serve")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address of the gRPC service (with --serve) and of the metrics endpoint",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on this port, at /metrics; 0 picks a free one "
        "(default: off)",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="recompute every table with the reference; exit 1 on a difference (with "
        "--serve: as --check once stopped)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="run nothing: check the work directory's results (after --serve) against the "
        "reference over every input it stored; exit 1 on a difference",
    )
    parser.add_argument("--quiet", action="store_true", help="no live progress")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    args = parser.parse_args(argv)
    try:
        args.rates = _rates(args.rate)
        open_results(args.database, args.workdir)
    except ValueError as exc:
        parser.error(str(exc))
    if args.dask is not None and args.risk_in_pool:
        parser.error("--dask and --risk-in-pool: the risk model runs in one place, choose one")
    if args.processes > 1 and not args.serve:
        parser.error("--processes needs --serve")
    if args.processes > 1 and args.metrics_port is not None:
        parser.error("--metrics-port serves one process's metrics: not with --processes")
    return args


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in --help, unless its help already says it in words."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _rates(specs: list[str]) -> dict[str, float]:
    rates = dict(RATES)
    for spec in specs:
        code, sep, value = spec.partition("=")
        try:
            rate = float(value)
        except ValueError:
            rate = -1.0
        if not sep or not code or not 0 < rate < math.inf:
            raise ValueError(
                f"--rate {spec!r}: expected CUR=RATE with RATE > 0 and finite, e.g. USD=5.1"
            )
        rates[code.strip().upper()] = rate
    return rates
