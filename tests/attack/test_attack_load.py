"""Load: short deadlines under overload are kept (and refused fast), nothing acknowledged
is lost; the first batch after health first says SERVING is answered promptly."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from demoprocess import DemoProcess, free_port, query
from rawclient import RawClient, id_block, send_raw_timed, send_timed, summary, valid_batch

from asyncpipe.demo.v1 import bank_pb2 as pb

pytestmark = pytest.mark.attack

CALLERS = 200
CALLS = 3  # per caller: 600 calls in all
CHANNELS = 4
SIZE = 200
LATE_BOUND = 0.150  # seconds past its deadline a call may end (50 ms + a loaded 2-core host)
FIRST_BATCH_BOUND = 2.0  # seconds


async def storm(tmp_path: Path) -> dict[str, Any]:
    """200 callers with 50 ms - 1 s deadlines against a demo server: the figures."""
    server = DemoProcess(tmp_path / "demo")
    rng = random.Random()
    first = id_block()
    # (status, seconds past the deadline, deadline, batch)
    calls: list[tuple[str, float, float, pb.TransactionBatch]] = []
    try:
        address = await server.ready()
        raws = [RawClient(address) for _ in range(CHANNELS)]
        # Every batch built and serialized before the storm: the callers only send.
        batches = [
            [
                valid_batch(f"storm-{c}-{n}", first + (c * CALLS + n) * SIZE, SIZE)
                for n in range(CALLS)
            ]
            for c in range(CALLERS)
        ]

        payloads = [[batch.SerializeToString() for batch in each] for each in batches]

        async def caller(c: int) -> None:
            for batch, payload in zip(batches[c], payloads[c], strict=True):
                deadline = rng.uniform(0.05, 1.0)
                status, _, took = await send_raw_timed(raws[c % CHANNELS], payload, deadline)
                calls.append((status, took - deadline, deadline, batch))

        try:
            async with asyncio.timeout(60):
                await asyncio.gather(*(caller(c) for c in range(CALLERS)))
        finally:
            for raw in raws:
                await raw.close()
        code, _ = await server.terminate()
        statuses = Counter(status for status, *_ in calls)
        late = max(calls, key=lambda call: call[1])
        acked = [tx.id for status, _, _, b in calls if status == "OK" for tx in b.transactions]
        rows = query(
            server.results,
            "SELECT id FROM transactions WHERE id BETWEEN ? AND ?",
            first,
            first + CALLERS * CALLS * SIZE,
        )
        lost = len(set(acked) - {row[0] for row in rows})
        fast = [lateness for status, lateness, *_ in calls if status == "RESOURCE_EXHAUSTED"]
        by_deadline = Counter(
            _bucket(deadline) for status, _, deadline, _ in calls if status == "DEADLINE_EXCEEDED"
        )
        figures: dict[str, Any] = {
            "calls": len(calls),
            "answers_by_status": dict(statuses),
            "max_ms_past_deadline": round(late[1] * 1000, 1),
            "its_status_and_deadline_ms": (late[0], round(late[2] * 1000)),
            "resource_exhausted_max_ms_past_deadline": round(max(fast) * 1000, 1) if fast else None,
            "deadline_exceeded_by_deadline": dict(sorted(by_deadline.items())),
            "acknowledged_items": len(acked),
            "lost": lost,
            "drain_exit": code,
        }
        (tmp_path / "figures.json").write_text(json.dumps(figures, indent=2))
        print(f"\noverload figures:\n{summary(figures)}")  # noqa: T201
        return figures
    finally:
        server.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def overload(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return await storm(tmp_path_factory.mktemp("overload"))


@pytest.mark.timeout(120)
@pytest.mark.asyncio(loop_scope="module")
async def test_overload_keeps_deadlines_and_loses_nothing(overload: dict[str, Any]) -> None:
    failures = {s for s in overload["answers_by_status"] if s != "OK"}
    assert failures <= {"RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"}, overload
    assert overload["max_ms_past_deadline"] <= LATE_BOUND * 1000, overload
    assert overload["lost"] == 0, overload
    assert overload["drain_exit"] == 0, overload


@pytest.mark.xfail(
    reason="issue 11 item 9, measured: grpc.aio takes one new call per event-loop turn; "
    "under the storm the demo's pipeline makes loop turns long, so most calls wait in "
    "gRPC's queue, unseen by the server's shedding, until their deadline (of 600 calls, "
    "~240 never reached the handler). Refusals the server does make are fast.",
    strict=False,
)
@pytest.mark.timeout(120)
@pytest.mark.asyncio(loop_scope="module")
async def test_overload_failures_are_mostly_fast_refusals(overload: dict[str, Any]) -> None:
    answers = overload["answers_by_status"]
    refused = answers.get("RESOURCE_EXHAUSTED", 0)
    assert refused * 2 > refused + answers.get("DEADLINE_EXCEEDED", 0), overload


def _bucket(deadline: float) -> str:
    """The range of deadlines ``deadline`` falls in, for the figures."""
    low = 50
    for high in (100, 250, 500):
        if deadline * 1000 < high:
            return f"{low}-{high}ms"
        low = high
    return "500-1000ms"


@pytest.mark.timeout(90)
async def test_the_first_batch_when_health_says_serving_is_answered_promptly(
    tmp_path: Path,
) -> None:
    port = free_port()
    server = DemoProcess(tmp_path / "demo", port)
    try:
        # Watching from before it listens: the first SERVING it pushes, not its stdout.
        async with RawClient(f"127.0.0.1:{port}") as raw:
            async with asyncio.timeout(60):
                async for status in raw.health_watch(timeout=60):
                    if status == "SERVING":
                        break
            status, reply, took = await send_timed(raw, valid_batch("first", id_block()), 20.0)
        print(f"\nfirst batch after SERVING: {status} in {took:.2f}s")  # noqa: T201
        assert status == "OK", (status, reply)
        assert took <= FIRST_BATCH_BOUND, (
            f"the first batch after SERVING took {took:.2f}s "
            f"(server: {reply and reply.processing_duration_seconds:.2f}s)"
        )
    finally:
        server.cleanup()
