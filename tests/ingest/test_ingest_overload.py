"""Overload is refused early, RESOURCE_EXHAUSTED, and nothing is answered late (item 9)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from ingest_helpers import rows, serving, transactions
from ingest_pipeline import bank_pipeline


class Valve:
    """A pipeline stage that holds messages while closed; it can be closed again."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.arrivals = 0
        self.arrived = asyncio.Event()

    async def __call__(self, message: Any) -> Any:
        self.arrivals += 1
        self.arrived.set()
        await self.open.wait()
        return message


def ids(db: Path) -> list[int]:
    return [row[0] for row in rows(db, "SELECT id FROM transactions ORDER BY id")]


async def test_a_call_that_cannot_be_answered_in_time_is_refused_at_once(
    tmp_path: Path,
) -> None:
    db = tmp_path / "bank.db"
    valve = Valve()
    async with serving(bank_pipeline(db, stage=valve), client_options={"retries": 0}) as served:
        client = served.client
        held = asyncio.create_task(client.send_transactions(transactions(5, 1), batch_id="a"))
        # Taken (nothing is known of the pipeline's pace yet), not done by its deadline:
        # the server answers DEADLINE_EXCEEDED just before it, never after.
        began = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await client.send_transactions(transactions(5, 6), batch_id="b", timeout=0.5)
        took = time.monotonic() - began
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "stays in the pipeline and will be committed" in (late.value.details() or "")
        assert took < 0.5 + 0.05
        valve.open.set()
        assert (await held).success
        # "b" was committed anyway; sending it again is harmless.
        assert (await client.send_transactions(transactions(5, 6), batch_id="b")).success
        assert ids(db) == list(range(1, 11))

        # Now the server knows a batch takes a good part of a second here.
        valve.open.clear()
        valve.arrived.clear()
        held = asyncio.create_task(client.send_transactions(transactions(5, 11), batch_id="c"))
        await valve.arrived.wait()
        arrivals = valve.arrivals
        began = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.send_transactions(transactions(5, 16), batch_id="d", timeout=0.2)
        took = time.monotonic() - began
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = refused.value.details() or ""
        assert details.startswith("server overloaded: expected wait ~")
        assert "ms left before the deadline" in details
        assert took < 0.15  # at once, not at the deadline
        assert served.server.load.in_flight == 1  # "d" was not taken
        valve.open.set()
        assert (await held).success
        assert valve.arrivals == arrivals  # nothing of "d" reached the pipeline
    assert ids(db) == list(range(1, 16))
