"""``python -m asyncpipe.demo``: the original's bank pipeline, end to end.

Generates (or reuses) deterministic dirty data in ``--workdir``, runs the pipeline to
completion with live progress, and prints a summary. ``--serve`` keeps it running with the
gRPC ingestion service and the inbox watcher until Ctrl-C (and resumes, when started again
on the same work directory, from what it acknowledged); ``--verify`` recomputes every
table with a plain reference program and exits 1 on any difference; ``--check`` does so
for a served work directory without running anything.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import resource
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence

from rich.console import Console

from .._executor import PipelineExecutor
from .._runner import install_signal_handlers, run
from ..ingest import IngestServer, serve
from ..metrics import serve_metrics
from ._cli import parse_args
from ._data import Scale, generate
from ._live import LiveView
from ._model import trained
from ._pipeline import DemoConfig, build_pipeline, ingest_server, reset_outputs
from ._processes import serve_in_processes
from ._reference import check_served, compare, compute
from ._summary import Summary, print_summary

logger = logging.getLogger("asyncpipe.demo")

#: Seconds a thread waiting for the GIL waits before the running thread must let it go
#: (``sys.setswitchinterval``; Python's default is 0.005). The event loop runs Python
#: almost without a pause under load, so each hand-off to a sink's thread -- the SQLite
#: writer, the CSV file's -- waited ~5 ms to start and again to finish: a table sink took
#: ~12 ms per batch at 20 clients and capped the pipeline. At 0.5 ms those threads get
#: their turn within a fraction of a millisecond (docs/performance.md).
SWITCH_INTERVAL = 0.0005
#: The collector's thresholds once serving (``gc.set_threshold``; Python's default is
#: (700, 10, 10)). A batch adds ~550 container objects that outlive it for a while, so
#: with 700 the youngest generation was collected about once per batch, each pass
#: walking the records in flight: ~0.5 ms a batch at 20 clients, 6% of the event loop's
#: time. At 10,000 a pass comes every ~50 batches, ~0.05 ms a batch (docs/performance.md).
GC_THRESHOLD = (10_000, 10, 10)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sys.setswitchinterval(SWITCH_INTERVAL)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    console = Console()
    scale = Scale(
        seed=args.seed,
        clients=args.clients,
        transactions=args.transactions,
        new=args.new,
        as_of=args.as_of.isoformat(),
    )
    workdir = args.workdir.resolve()
    config = DemoConfig(
        workdir=workdir,
        scale=scale,
        rates=args.rates,
        serve=args.serve,
        max_workers=args.workers,
        dedupe_ttl=args.dedupe_ttl,
        risk_in_pool=args.risk_in_pool,
        database=args.database,
        processes=args.processes,
    )
    started = time.perf_counter()
    with console.status("generating input data (Faker pt_BR)..."):
        made = generate(workdir, scale)
    console.print(
        f"[bold]inputs[/] {'generated' if made else 'reused'} in {workdir} "
        f"(seed {scale.seed}, {scale.clients:,} clients, {scale.transactions:,} "
        f"historical + {scale.new:,} new transactions, as of {scale.as_of})"
    )
    with console.status("training the risk model..."):
        model = trained(workdir / "input", scale.seed)
    if args.check:
        return _verify(console, config, model, served=True)
    reset_outputs(config, inputs_changed=made)
    cluster = contextlib.ExitStack()
    if args.dask is not None:
        with console.status("setting up Dask..."):
            config.dask = cluster.enter_context(_dask(args.dask, args.workers))
        console.print(f"[bold]Dask[/] risk model on the cluster at {config.dask}")
    if args.processes > 1:
        with cluster:
            return _serve_in_processes(console, config, model, args)
    executor = build_pipeline(config, model)
    (config.out / "pipeline.mmd").write_text(executor.to_mermaid() + "\n")
    ran_at = time.perf_counter()
    try:
        run(_run(executor, config, args, console))
    except KeyboardInterrupt:  # a second Ctrl-C during the drain
        console.print("[red]aborted[/]")
        return 130
    finally:
        cluster.close()
    elapsed = time.perf_counter() - ran_at
    _summary(console, config, elapsed, time.perf_counter() - started)
    return _verify(console, config, model, served=args.serve) if args.verify else 0


def _serve_in_processes(
    console: Console, config: DemoConfig, model: bytes, args: argparse.Namespace
) -> int:
    """``--serve --processes N``: until stopped; then ``--verify`` checks the results."""
    level = logging.INFO if args.verbose else logging.WARNING
    serving = serve_in_processes(
        config,
        model,
        host=args.host,
        port=args.port,
        console=console,
        level=level,
        switch=SWITCH_INTERVAL,
    )
    try:
        run(serving)
    except KeyboardInterrupt:  # a second Ctrl-C during the drain
        console.print("[red]aborted[/]")
        return 130
    return _verify(console, config, model, served=True) if args.verify else 0


def _verify(console: Console, config: DemoConfig, model: bytes, *, served: bool) -> int:
    """Compare the results with the reference (over every stored input, for a served
    work directory); 0 when equal, else 1 with the differences printed."""
    database = config.results_db
    if not database.exists():
        console.print(f"[bold red]verify: no results in {database.label}[/]")
        return 1
    with console.status("verifying against the reference computation..."):
        if served:
            problems = check_served(config, model)
            what = "every table equals the reference over every stored input"
        else:
            problems = compare(database, compute(config, model))
            what = "every table equals the reference"
    if problems:
        console.print(f"[bold red]verify: {len(problems)} difference(s)[/]")
        for problem in problems:
            console.print(f"  {problem}")
        return 1
    console.print(f"[bold green]verify: {what}[/]")
    return 0


@contextlib.contextmanager
def _dask(address: str, workers: int | None) -> Iterator[str]:
    """The scheduler's address: ``address``, or with ``local`` a LocalCluster's, of
    ``workers`` (default: the CPU count) single-threaded worker processes on loopback,
    closed at the end."""
    if address != "local":
        yield address
        return
    from distributed import LocalCluster

    # distributed logs its cluster's every start and stop at INFO: not news here.
    logging.getLogger("distributed").setLevel(logging.getLogger().getEffectiveLevel())
    with LocalCluster(
        n_workers=workers or os.cpu_count() or 1,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.getLogger().getEffectiveLevel(),
    ) as cluster:
        yield cluster.scheduler_address


async def _run(
    executor: PipelineExecutor, config: DemoConfig, args: argparse.Namespace, console: Console
) -> None:
    server = None
    if args.serve:
        server = ingest_server(executor, config, host=args.host, port=args.port)
    async with (
        _metrics(executor, server, args, console),
        _progress(executor, config, console, server, enabled=not args.quiet),
    ):
        if server is not None:

            def ready(server: IngestServer) -> None:
                # A long-running service: keep everything made at start-up (modules,
                # the model, the inputs' state) out of the collector's full passes.
                # Measured: the largest GC pause under load went from 83 to 46 ms.
                gc.freeze()
                gc.set_threshold(*GC_THRESHOLD)
                console.print(
                    f"[bold]serving[/] gRPC on {server.address} and watching "
                    f"{config.workdir / 'inbox'}; Ctrl-C to drain and stop"
                )

            await serve(server, on_ready=ready)
        else:
            remove = install_signal_handlers(executor.stop, executor.abort)
            try:
                await executor.run()
            finally:
                remove()


@contextlib.asynccontextmanager
async def _metrics(
    executor: PipelineExecutor,
    server: IngestServer | None,
    args: argparse.Namespace,
    console: Console,
) -> AsyncIterator[None]:
    """The Prometheus endpoint while the pipeline runs (none without --metrics-port)."""
    if args.metrics_port is None:
        yield
        return
    try:
        endpoint = serve_metrics(executor, args.metrics_port, args.host, server=server)
    except OSError as exc:
        raise SystemExit(f"--metrics-port {args.metrics_port}: {exc}") from None
    console.print(f"[bold]metrics[/] on {endpoint.url}", soft_wrap=True)
    async with endpoint:
        yield


@contextlib.asynccontextmanager
async def _progress(
    executor: PipelineExecutor,
    config: DemoConfig,
    console: Console,
    server: IngestServer | None,
    *,
    enabled: bool,
) -> AsyncIterator[None]:
    """The live table of per-node counters (and of the gRPC service, when it serves)
    while the pipeline runs (none if not enabled)."""
    if not enabled:
        yield
        return
    async with LiveView(executor, config.results_db, console, server).running():
        yield


def _summary(console: Console, config: DemoConfig, elapsed: float, total: float) -> None:
    summary = Summary.read(config.results_db)
    print_summary(console, summary)
    # Every input row ends up stored or dead-lettered.
    counts = summary.counts
    source_rows = (
        counts["clients"] + counts["scores"] + counts["transactions"] + summary.dead_letters
    )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    console.print(
        f"[bold]pipeline[/] {elapsed:.2f}s ({total:.2f}s with data and model): "
        f"{source_rows:,} input rows ({source_rows / elapsed:,.0f}/s) stored as "
        + ", ".join(f"{table} {count:,}" for table, count in counts.items())
        + f", dead letters {summary.dead_letters:,}; peak RSS {rss:,.0f} MiB"
    )
    # Paths whole (the terminal wraps them), so they can be copied.
    console.print(
        f"[bold]results[/] {config.results_db.label}, [bold]DAG[/] {config.out / 'pipeline.mmd'}",
        soft_wrap=True,
    )
    console.print(
        f"[bold]classified[/] {config.out / 'classified_transactions.csv'}", soft_wrap=True
    )


if __name__ == "__main__":
    sys.exit(main())
