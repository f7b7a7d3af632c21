"""Ingestion benchmark: ``python -m asyncpipe.ingest.bench [--concurrency 1,10,50] [--quick]``.

Requests/s and items/s of ``IngestTransactions`` (and/or ``IngestStream``) calls carrying
``--items``-item batches, at each concurrency level, against two servers started side by
side in one run:

* **raw**: a bare ``grpc.aio`` servicer of the same ``IngestionService`` that answers each
  batch with ``IngestResponse(batch_id, success, items_received)`` without looking at the
  items -- what gRPC itself costs;
* **asyncpipe**: :class:`~asyncpipe.ingest.IngestServer` on a no-op pipeline (an ingress
  node ``transactions`` -> a terminal sink that drops the batch), ``ack="committed"``:
  every item is checked, the batch goes through the pipeline and the reply is built from
  its receipt.

Each server runs in its own process (spawned, on 127.0.0.1, port 0) and the load
generator in this one, so no two event loops share a thread. Both sides get the same
pre-serialised requests (valid transactions, a distinct ``batch_id`` each) and the same
server options; uvloop is used everywhere when installed. Per level the runs go
raw, asyncpipe, asyncpipe, raw (``--pairs`` times), each with a warm-up, and the ratio
reported is the median of the per-pair ratios. The server's CPU time per request (from
``/proc``) shows where a gap comes from even when the load generator is the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from .._executor import PipelineExecutor
from .._graph import HandlerNode
from .._runner import install_signal_handlers, loop_factory, run
from ._records import transaction_records
from ._server import IngestServer, serve
from .v1 import ingest_pb2 as pb
from .v1 import ingest_pb2_grpc as pb_grpc

__all__ = ["main"]

TARGET = 0.8
SIDES = ("raw", "asyncpipe")
CALL_TIMEOUT = 30.0  # seconds: every call carries a deadline, as real clients' do
START_TIMEOUT = 60.0  # seconds a server process may take to report its port
SERVER_OPTIONS = [  # what IngestServer sets; the raw server gets the same
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.so_reuseport", 0),
]
_SERVICE = "/asyncpipe.ingest.v1.IngestionService/"


# -- the requests ----------------------------------------------------------------------------


def transaction_batch(index: int, items: int) -> pb.TransactionBatch:
    """Batch ``index``: ``items`` valid transactions with ids unique across batches."""
    start = index * items + 1
    batch = pb.TransactionBatch(batch_id=f"bench-{index:06d}")
    batch.emitted_at.GetCurrentTime()
    for i in range(start, start + items):
        t = batch.transactions.add(
            id=i,
            client_id=1 + i % 50,
            date=f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}",
            amount=round(10 + (i * 7.31) % 990, 2),
            currency=("BRL", "USD", "EUR")[i % 3],
            description=f"compra {i}",
        )
        if i % 2:
            t.category = "Compras"
    return batch


def request_payloads(count: int, items: int, stream: bool) -> list[bytes]:
    """``count`` serialised requests (``IngestRequest`` wrappers for the stream RPC)."""
    payloads = []
    for index in range(count):
        batch = transaction_batch(index, items)
        message = pb.IngestRequest(transactions=batch) if stream else batch
        payloads.append(message.SerializeToString())
    return payloads


# -- the servers (each in its own process) ---------------------------------------------------


class RawServicer(pb_grpc.IngestionServiceServicer):
    """Answers every batch at once, items untouched: the cost of gRPC alone."""

    async def IngestTransactions(
        self, request: pb.TransactionBatch, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.IngestResponse:
        return pb.IngestResponse(
            batch_id=request.batch_id, success=True, items_received=len(request.transactions)
        )

    async def IngestStream(
        self,
        request_iterator: AsyncIterator[pb.IngestRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.IngestResponse]:
        async for request in request_iterator:
            batch = request.transactions
            yield pb.IngestResponse(
                batch_id=batch.batch_id, success=True, items_received=len(batch.transactions)
            )


async def _serve_raw(report: Any) -> None:
    stop = asyncio.Event()
    remove = install_signal_handlers(stop.set, stop.set)
    server = grpc.aio.server(options=SERVER_OPTIONS)
    pb_grpc.add_IngestionServiceServicer_to_server(RawServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    report.send(port)
    try:
        await stop.wait()
    finally:
        remove()
        await server.stop(1.0)


def discard(batch: list[dict[str, Any]]) -> None:
    """The no-op sink: the batch counts as committed once this returns."""


def noop_pipeline() -> PipelineExecutor:
    ingress = HandlerNode("transactions")
    return PipelineExecutor([ingress], [HandlerNode("discard", discard, [ingress])])


async def _serve_asyncpipe(report: Any) -> None:
    server = IngestServer(noop_pipeline(), clients=None, scores=None, ack="committed")
    await serve(server, grace=1.0, on_ready=lambda server: report.send(server.port))


def server_main(side: str, report: Any, use_uvloop: bool) -> None:
    """Entry point of a server process: serve until SIGTERM, reporting the port first."""
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)  # no "SIGTERM received"
    coro = _serve_raw(report) if side == "raw" else _serve_asyncpipe(report)
    run(coro, use_uvloop=use_uvloop)


@dataclass
class ServerProcess:
    side: str
    process: Any
    port: int

    @classmethod
    def start(cls, side: str, use_uvloop: bool) -> ServerProcess:
        context = multiprocessing.get_context("spawn")  # no gRPC state inherited by fork
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=server_main, args=(side, sender, use_uvloop), name=f"bench-{side}"
        )
        process.start()
        sender.close()
        if not receiver.poll(START_TIMEOUT):
            process.kill()
            raise RuntimeError(f"the {side} server did not start")
        return cls(side, process, receiver.recv())

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the server process so far (Linux), else None."""
        try:
            with open(f"/proc/{self.process.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


# -- the load --------------------------------------------------------------------------------


@dataclass
class Sample:
    """One timed run of one side at one level."""

    side: str
    requests: int
    seconds: float
    latencies: list[float]
    errors: int
    server_cpu: float | None  # seconds of the server process during the window
    client_cpu: float  # seconds of this process during the window

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else 0.0


@dataclass
class Window:
    """Completions are counted from ``opens`` (after the warm-up) to ``closes``."""

    opens: float
    closes: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    cursor: int = 0

    def record(self, sent: float, reply: pb.IngestResponse, items: int) -> None:
        now = time.perf_counter()
        if not self.opens <= now <= self.closes:
            return
        if reply.success and reply.items_received == items:
            self.latencies.append(now - sent)
        else:
            self.errors += 1


async def unary_load(
    channel: grpc.aio.Channel, payloads: list[bytes], items: int, window: Window, concurrency: int
) -> None:
    call: Any = channel.unary_unary(  # bytes in (pre-serialised), messages out
        _SERVICE + "IngestTransactions", response_deserializer=pb.IngestResponse.FromString
    )

    async def caller() -> None:
        clock = time.perf_counter
        while clock() < window.closes:
            payload = payloads[window.cursor % len(payloads)]
            window.cursor += 1
            sent = clock()
            reply = await call(payload, timeout=CALL_TIMEOUT)
            window.record(sent, reply, items)

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(caller())


async def stream_load(
    channel: grpc.aio.Channel, payloads: list[bytes], items: int, window: Window, concurrency: int
) -> None:
    """One ``IngestStream`` call with up to ``concurrency`` batches in flight."""
    call: Any = channel.stream_stream(
        _SERVICE + "IngestStream", response_deserializer=pb.IngestResponse.FromString
    )(timeout=CALL_TIMEOUT + window.closes - time.perf_counter())
    ids = [pb.IngestRequest.FromString(p).transactions.batch_id for p in payloads]
    in_flight = asyncio.Semaphore(concurrency)
    sent_at: dict[str, float] = {}

    async def write() -> None:
        clock = time.perf_counter
        while clock() < window.closes:
            await in_flight.acquire()
            index = window.cursor % len(payloads)
            window.cursor += 1
            sent_at[ids[index]] = clock()
            await call.write(payloads[index])
        await call.done_writing()

    async def read() -> None:
        async for reply in call:
            window.record(sent_at.pop(reply.batch_id), reply, items)
            in_flight.release()

    async with asyncio.TaskGroup() as group:
        group.create_task(write())
        group.create_task(read())


async def measure(
    server: ServerProcess,
    rpc: str,
    payloads: list[bytes],
    items: int,
    concurrency: int,
    warmup: float,
    seconds: float,
) -> Sample:
    load = unary_load if rpc == "unary" else stream_load
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=SERVER_OPTIONS) as ch:
        await asyncio.wait_for(ch.channel_ready(), START_TIMEOUT)
        gc.collect()
        start = time.perf_counter()
        window = Window(start + warmup, start + warmup + seconds)
        cpu: dict[str, tuple[float | None, float]] = {}

        async def mark(name: str, at: float) -> None:
            await asyncio.sleep(at - time.perf_counter())
            cpu[name] = (server.cpu_seconds(), time.process_time())

        async with asyncio.TaskGroup() as group:
            group.create_task(mark("opens", window.opens))
            group.create_task(mark("closes", window.closes))
            group.create_task(load(ch, payloads, items, window, concurrency))
    (server_before, client_before), (server_after, client_after) = cpu["opens"], cpu["closes"]
    server_cpu = None
    if server_before is not None and server_after is not None:
        server_cpu = server_after - server_before
    return Sample(
        server.side,
        requests=len(window.latencies),
        seconds=seconds,
        latencies=window.latencies,
        errors=window.errors,
        server_cpu=server_cpu,
        client_cpu=client_after - client_before,
    )


# -- the report ------------------------------------------------------------------------------


@dataclass
class Level:
    rpc: str
    concurrency: int
    samples: dict[str, list[Sample]] = field(default_factory=lambda: {s: [] for s in SIDES})

    def ratios(self) -> list[float]:
        raw, ours = self.samples["raw"], self.samples["asyncpipe"]
        return [o.rps / r.rps for r, o in zip(raw, ours, strict=True) if r.rps]

    def row(self, items: int) -> str:
        cells = [f"{self.rpc:6} {self.concurrency:>4}"]
        for side in SIDES:
            runs = self.samples[side]
            rps = statistics.median(s.rps for s in runs)
            p50 = statistics.median(s.percentile(0.50) for s in runs) * 1000
            p99 = statistics.median(s.percentile(0.99) for s in runs) * 1000
            cpu = [s.server_cpu / s.requests for s in runs if s.server_cpu and s.requests]
            srv = f"{statistics.median(cpu) * 1e6:6.0f}" if cpu else "     ?"
            cli = statistics.median(s.client_cpu / s.requests for s in runs if s.requests) * 1e6
            cells.append(
                f"{rps:8,.0f} {rps * items / 1000:6,.0f}k {p50:6.2f} {p99:6.2f} {srv} {cli:6.0f}"
            )
        ratio = statistics.median(self.ratios()) if self.ratios() else 0.0
        verdict = "ok" if round(ratio, 2) >= TARGET else "MISSED"
        return " | ".join(cells) + f" | {ratio:5.2f}x {verdict}"


HEADER = (
    "rpc    conc |  raw rps  items/s  p50ms  p99ms srv-us cli-us"
    " |  ap. rps  items/s  p50ms  p99ms srv-us cli-us | ratio"
)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m asyncpipe.ingest.bench",
        description="IngestServer on a no-op pipeline vs a raw grpc.aio echo of the same calls.",
    )
    parser.add_argument(
        "--concurrency",
        type=lambda text: [int(c) for c in text.split(",")],
        default=[1, 10, 50],
        help="comma-separated calls in flight (default 1,10,50)",
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds per run")
    parser.add_argument("--pairs", type=int, default=2, help="raw/asyncpipe pairs per level")
    parser.add_argument("--rpc", choices=("unary", "stream", "both"), default="unary")
    parser.add_argument("--items", type=int, default=200, help="items per batch")
    parser.add_argument("--batches", type=int, default=500, help="distinct requests to cycle")
    parser.add_argument("--no-uvloop", action="store_true", help="use the default event loop")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--check", action="store_true", help="exit 1 if a ratio is below target")
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


def plain_dicts(items: Any) -> list[dict[str, Any]]:
    """The seven fields of each item in a dict, nothing checked: the least any conversion of
    the items into Python records costs."""
    return [
        {
            "id": t.id,
            "client_id": t.client_id,
            "date": t.date,
            "amount": t.amount,
            "currency": t.currency,
            "description": t.description,
            "category": t.category,
        }
        for t in items
    ]


def conversion_costs(payloads: Sequence[bytes], rounds: int = 20) -> dict[str, float]:
    """Best-of-``rounds`` µs per batch, in this process, to parse a request and then do
    nothing, build :func:`plain_dicts`, or check and convert it as the server does."""
    parse = pb.TransactionBatch.FromString
    costs = {}
    for name, convert in (
        ("parse", lambda items: None),
        ("plain dicts", plain_dicts),
        ("checked records", transaction_records),
    ):
        best = math.inf
        for _ in range(rounds):
            started = time.perf_counter()
            for payload in payloads:
                convert(parse(payload).transactions)
            best = min(best, time.perf_counter() - started)
        costs[name] = best / len(payloads) * 1e6
    return costs


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    use_uvloop = not args.no_uvloop
    factory = loop_factory(use_uvloop)
    servers = {side: ServerProcess.start(side, use_uvloop) for side in SIDES}
    pids = ", ".join(f"{side} {server.process.pid}" for side, server in servers.items())
    try:
        print(
            f"asyncpipe.ingest.bench: Python {platform.python_version()}, "
            f"{os.cpu_count()} CPUs, grpcio {grpc.__version__}, "
            f"loop={'uvloop' if factory else 'asyncio'}, {args.items}-item batches, "
            f"{args.seconds:g}s per run after {args.warmup:g}s warm-up, "
            f"{args.pairs} x (raw, asyncpipe, asyncpipe, raw) per level; server pids: {pids}",
            flush=True,
        )
        print(
            "ap.: asyncpipe; p50/p99: call latency; srv-us / cli-us: CPU per request (µs) of "
            "the server process / of the load generator; ratio: median of the per-pair "
            f"asyncpipe/raw requests/s (target >= {TARGET}x)"
        )
        print(HEADER, flush=True)
        with asyncio.Runner(loop_factory=factory) as runner:
            levels = runner.run(bench(args, servers))
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
    missed = [lv for lv in levels if round(statistics.median(lv.ratios()), 2) < TARGET]
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
