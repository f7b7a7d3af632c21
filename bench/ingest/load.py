"""The load generator of ``python -m bench.ingest``: requests, calls, timed windows."""

from __future__ import annotations

import asyncio
import gc
import time
from dataclasses import dataclass, field
from typing import Any

import grpc

# Private, for one definition of a percentile across asyncpipe's figures (node latencies,
# the load test, this benchmark); asyncpipe has no public statistics helper.
from asyncpipe._metrics import percentile
from asyncpipe.demo.v1 import bank_pb2 as pb

from .servers import SERVER_OPTIONS, START_TIMEOUT, ServerProcess

__all__ = ["Sample", "measure", "request_payloads", "transaction_batch"]

CALL_TIMEOUT = 30.0  # seconds: every call carries a deadline, as real clients' do
_SERVICE = "/asyncpipe.demo.v1.IngestionService/"


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

    def percentile(self, fraction: float) -> float:
        return percentile(self.latencies, fraction) or 0.0


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
    """Load ``server`` for ``warmup + seconds``; count what completes after the warm-up."""
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
