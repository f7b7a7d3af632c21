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

from asyncpipe.demo.service import bank_routes
from asyncpipe.demo.v1 import bank_pb2 as pb

# Private on purpose: the loop the server runs over a batch's items, measured as it is.
from asyncpipe.ingest._routes import convert_items

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
    check = bank_routes(transactions="transactions")["IngestTransactions"].convert
    costs = {}
    for name, convert in (
        ("parse", lambda items: None),
        ("plain dicts", plain_dicts),
        ("checked records", lambda items: convert_items(check, items)),
    ):
        best = math.inf
        for _ in range(rounds):
            started = time.perf_counter()
            for payload in payloads:
                convert(parse(payload).transactions)
            best = min(best, time.perf_counter() - started)
        costs[name] = best / len(payloads) * 1e6
    return costs
