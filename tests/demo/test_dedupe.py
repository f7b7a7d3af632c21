"""The aggregator's dedupe is bounded: more distinct ids than the bound keep its size at
the bound, and a resend within the bound is counted once."""

from __future__ import annotations

import json
from typing import Any

import pytest
from demo_helpers import AS_OF

from asyncpipe.demo._dedupe import RecentIds
from asyncpipe.demo._stages import Aggregator


def test_more_distinct_ids_than_the_bound_keep_the_size_at_the_bound() -> None:
    ids = RecentIds(1000)
    assert all(ids.add(i) for i in range(10_000))
    assert len(ids) == 1000 and len(ids._order) == 1000
    assert 9_000 in ids and 8_999 not in ids  # the oldest are forgotten first
    assert not ids.add(9_500)  # a resend within the bound: not new
    assert ids.add(5)  # a resend after eviction: new again (the documented trade-off)
    assert len(ids) == 1000


def test_a_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        RecentIds(0)


def tx(tx_id: int) -> dict[str, Any]:
    return {
        "id": tx_id,
        "client_id": 1,
        "date": AS_OF,
        "amount": 10.0,
        "currency": "BRL",
        "amount_brl": 10.0,
        "description": "UBER",
        "category": "Transporte",
        "suspicious": 0,
    }


async def counted(aggregator: Aggregator, *batches: list[dict[str, Any]]) -> int:
    for batch in batches:
        async for _ in aggregator.handle(batch):
            pass
    async for kind, rows in aggregator.finish():
        assert kind == "metrics"
        values = {row["name"]: json.loads(row["value"]) for row in rows}
        return int(values["transactions"])
    raise AssertionError("no metrics")


async def test_the_aggregator_counts_a_resend_within_the_bound_once_with_bounded_memory() -> None:
    aggregator = Aggregator(AS_OF, dedupe_ids=100)
    first = [tx(i) for i in range(1, 1001)]
    resent = [tx(i) for i in range(950, 1001)]  # the last 51 ids: within the bound
    assert await counted(aggregator, first, resent) == 1000
    assert len(aggregator.seen) == 100
