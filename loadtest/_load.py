"""The load generator: concurrent clients sending transaction batches, each round trip timed.

Every client has its own connection (one ``grpc.aio`` channel) and one batch in flight at
a time, like the original's client processes; ``procs`` spreads the clients over worker
processes so that the generator is not the bottleneck. Transaction ids are unique across
the whole sweep: level ``L``, client ``C``, batch ``n`` uses ids from
``BASE + L * 10**9 + C * 10**7 + n * batch_size``.

Every loop is bounded: by the level's deadline, by ``requests`` per client when given, and
each call by its own timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import random
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

import grpc

from asyncpipe import run
from asyncpipe.demo.service import BankClient as IngestClient  # the bank's service
from asyncpipe.demo.v1 import bank_pb2 as pb
from asyncpipe.ingest import IngestStream

__all__ = ["BASE_ID", "RUN_SPAN", "Plan", "Sample", "new_run_base", "run_level"]

BASE_ID = 1_000_000_000_000  # far above any id the demo generates
RUN_SPAN = 10**11  # ids of one run: [run_base, run_base + RUN_SPAN)
_LEVEL_SPAN = 10**9  # up to 100 levels per run
_CLIENT_SPAN = 10**7  # up to 100 clients per level, 10**7 items per client
_ERROR_PAUSE = 0.05  # seconds a client waits after a failed call before the next one


class Sample(NamedTuple):
    """One round trip."""

    client: int
    warmup: bool
    started: float  # time.time() at the send
    rtt: float  # seconds, monotonic clock
    status: str  # "OK", "FAILED" (success=false), or the gRPC status name
    first_id: int
    items: int  # sent
    processed: int  # acknowledged as processed (0 unless OK)
    server_seconds: float  # processing_duration_seconds reported by the server


@dataclass(frozen=True)
class Plan:
    target: str
    run_base: int  # first id of this run (see new_run_base)
    level: int  # index of the level in the sweep
    clients: int
    batch_size: int
    rpc: str  # "unary" or "stream"
    warmup: float  # seconds
    duration: float  # seconds, after the warm-up
    requests: int | None  # per client (measured), instead of running for `duration`
    timeout: float  # per call
    procs: int


def new_run_base() -> int:
    """A random block of ids for one run, so that rows a server kept from an earlier run
    cannot stand in for this run's (int64 ids: up to 9 * 10**6 blocks above BASE_ID)."""
    return BASE_ID + random.randrange(9 * 10**6) * RUN_SPAN


def check_plan(levels: int, clients: int, batch_size: int) -> None:
    """Raise ValueError when a run would not fit in its block of ids."""
    if levels > RUN_SPAN // _LEVEL_SPAN or clients > _LEVEL_SPAN // _CLIENT_SPAN:
        raise ValueError("at most 100 levels and 100 clients per level")
    if batch_size > _CLIENT_SPAN // 1000:
        raise ValueError(f"--batch-size at most {_CLIENT_SPAN // 1000}")


def run_level(plan: Plan) -> list[Sample]:
    """Run one level; all its samples (warm-up included, flagged)."""
    start_at = time.time() + 0.3  # every process starts together
    groups = [list(range(i, plan.clients, plan.procs)) for i in range(plan.procs)]
    groups = [g for g in groups if g]
    if len(groups) == 1:
        return run(_group(plan, groups[0], start_at))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(groups), mp_context=context) as pool:
        # Spawned processes take a moment to import: start them a little later.
        start_at = time.time() + 2.0
        futures = [pool.submit(_run_group, plan, group, start_at) for group in groups]
        return [sample for future in futures for sample in future.result()]


def _run_group(plan: Plan, clients: list[int], start_at: float) -> list[Sample]:
    return run(_group(plan, clients, start_at))


async def _group(plan: Plan, clients: list[int], start_at: float) -> list[Sample]:
    await asyncio.sleep(max(0.0, start_at - time.time()))  # a start line, not a wait for work
    samples: list[Sample] = []
    await asyncio.gather(*(_client(plan, c, samples) for c in clients))
    return samples


async def _client(plan: Plan, index: int, samples: list[Sample]) -> None:
    """Warm up (``plan.warmup`` seconds, and at least one round trip), then measure for
    ``plan.duration`` seconds (or ``plan.requests`` round trips, within that time)."""
    loop = asyncio.get_running_loop()
    warm_until = loop.time() + plan.warmup
    end = warm_until + plan.duration
    hard_end = end + plan.timeout  # however slow the first reply, the client stops here
    batch = _template(plan.batch_size, index)
    first_id = plan.run_base + plan.level * _LEVEL_SPAN + index * _CLIENT_SPAN
    measured = 0
    async with contextlib.AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            IngestClient(plan.target, timeout=plan.timeout, retries=0, wait_for_ready=False)
        )
        stream: IngestStream | None = None
        if plan.rpc == "stream":
            stream = client.stream(timeout=hard_end - loop.time() + plan.timeout)
            stack.push_async_exit(_quietly(stream))
            await stream.__aenter__()
        n = 0
        while True:
            now = loop.time()
            warmup = now < warm_until or n == 0
            if now >= end or (plan.requests is not None and measured >= plan.requests):
                break
            ids_from = first_id + n * plan.batch_size
            batch.batch_id = f"lt-{plan.level}-{index}-{n}"
            for k, tx in enumerate(batch.transactions):
                tx.id = ids_from + k
            n += 1
            started_wall, started = time.time(), time.perf_counter()
            status, processed, server_seconds = await _round_trip(client, stream, batch, plan)
            rtt = time.perf_counter() - started
            samples.append(
                Sample(
                    index,
                    warmup,
                    started_wall,
                    rtt,
                    status,
                    ids_from,
                    plan.batch_size,
                    processed,
                    server_seconds,
                )
            )
            if n == 1:  # a first reply after the warm-up: measure a full duration from it
                end = max(end, min(loop.time() + plan.duration, hard_end))
            if not warmup:
                measured += 1
            if status != "OK":
                if stream is not None:
                    break  # a broken stream answers nothing more
                await asyncio.sleep(_ERROR_PAUSE)  # a failing server: don't spin on it


async def _round_trip(
    client: IngestClient, stream: IngestStream | None, batch: pb.TransactionBatch, plan: Plan
) -> tuple[str, int, float]:
    """Send ``batch`` (on ``stream`` if there is one) and wait for its reply: the status
    (``OK``, ``FAILED`` or a gRPC status name), the items processed and the server's
    processing time."""
    try:
        if stream is not None:
            reply = await asyncio.wait_for(stream.send(batch), plan.timeout)
        else:
            reply = await client.send(batch)
    except grpc.aio.AioRpcError as error:
        return error.code().name, 0, 0.0
    except TimeoutError:
        return "DEADLINE_EXCEEDED", 0, 0.0
    except ConnectionError:  # the stream ended under us
        return "UNAVAILABLE", 0, 0.0
    if reply.success:
        return "OK", reply.items_processed, reply.processing_duration_seconds
    return "FAILED", 0, reply.processing_duration_seconds


def _quietly(stream: IngestStream) -> Any:
    """An exit callback closing ``stream`` without raising (it may be broken already)."""

    async def close(*exc_info: Any) -> bool:
        with contextlib.suppress(grpc.aio.AioRpcError, ConnectionError):
            await stream.__aexit__(None, None, None)
        return False

    return close


def _template(size: int, client: int) -> pb.TransactionBatch:
    """A batch of valid transactions; the sender only changes the ids and batch_id."""
    batch = pb.TransactionBatch()
    for k in range(size):
        batch.transactions.add(
            id=0,
            client_id=1 + (client * 7919 + k * 104729) % 1000,
            date="2026-11-01",
            amount=round(10 + (k * 37.3) % 900, 2),
            currency=("BRL", "BRL", "USD", "EUR")[k % 4],
            description=("SUPERMERCADO CENTRO", "UBER SUL", "PIX RIO", "SALARIO ACME")[k % 4],
        )
    batch.emitted_at.GetCurrentTime()
    return batch
