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
from demoprocess import DemoProcess, free_port, query
from rawclient import RawClient, id_block, send_raw_timed, send_timed, summary, valid_batch

from asyncpipe.ingest.v1 import ingest_pb2 as pb

pytestmark = pytest.mark.attack

CALLERS = 200
CALLS = 3  # per caller: 600 calls in all
CHANNELS = 4
SIZE = 200
LATE_BOUND = 0.150  # seconds past its deadline a call may end (50 ms + a loaded 2-core host)
FIRST_BATCH_BOUND = 2.0  # seconds


@pytest.mark.timeout(120)
async def test_overload_with_short_deadlines_fails_fast_and_loses_nothing(
    tmp_path: Path,
) -> None:
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
        failures = {s: n for s, n in statuses.items() if s != "OK"}
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
        problems = []
        if set(failures) - {"RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED"}:
            problems.append(f"unexpected answers: {failures}")
        if failures and failures.get("RESOURCE_EXHAUSTED", 0) * 2 <= sum(failures.values()):
            problems.append(f"failures are not mostly fast RESOURCE_EXHAUSTED: {failures}")
        if late[1] > LATE_BOUND:
            problems.append(
                f"a call ended {late[1] * 1000:.0f} ms past its {late[2] * 1000:.0f} ms "
                f"deadline ({late[0]})"
            )
        if lost:
            problems.append(f"{lost} acknowledged items lost")
        if code != 0:
            problems.append(f"drain exit {code}")
        assert not problems, "\n".join(problems)
    finally:
        server.cleanup()


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
