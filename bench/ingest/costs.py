"""The last line of ``python -m bench.ingest``: what converting a batch's items costs.

The raw echo never reads the items; the server does. Measured in this process, per batch:
parsing alone, parsing then building plain dicts (nothing checked), and parsing then
checking and converting the items as the server does.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from asyncpipe.ingest import transaction_records
from asyncpipe.ingest.v1 import ingest_pb2 as pb

__all__ = ["conversion_costs", "plain_dicts"]


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
