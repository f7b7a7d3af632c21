"""The pipeline the ingestion tests serve: each kind of batch upserted into its table."""

from __future__ import annotations

import os
from typing import Any

from asyncpipe import HandlerNode, PipelineExecutor
from asyncpipe.connectors import SqliteSink

SCHEMAS: dict[str, tuple[str, dict[str, str]]] = {
    "clients": (
        "id",
        {"id": "INTEGER", "name": "TEXT", "cpf": "TEXT", "birth_date": "TEXT", "address": "TEXT"},
    ),
    "transactions": (
        "id",
        {
            "id": "INTEGER",
            "client_id": "INTEGER",
            "date": "TEXT",
            "amount": "REAL",
            "currency": "TEXT",
            "description": "TEXT",
            "category": "TEXT",
        },
    ),
    "scores": (
        "cpf",
        {
            "cpf": "TEXT",
            "score": "INTEGER",
            "monthly_income": "REAL",
            "credit_limit": "REAL",
            "updated_at": "TEXT",
        },
    ),
}


#: The nodes each kind of batch of the bank's service goes to (bank_server's keywords).
BANK_NODES: dict[str, Any] = {kind: kind for kind in SCHEMAS}  # bank_server keywords


def bank_pipeline(
    db: str | os.PathLike[str],
    *,
    stage: Any = None,
    on_error: str = "dead_letter",
    **executor_options: Any,
) -> PipelineExecutor:
    """clients / transactions / scores ingress nodes, each upserted into its table.

    ``stage``, if given, is a handler (with the ``on_error`` policy) put between the
    transactions ingress and its sink.
    """
    producers, consumers = [], []
    for kind, (key, schema) in SCHEMAS.items():
        upstream = ingress = HandlerNode(kind)
        producers.append(ingress)
        if kind == "transactions" and stage is not None:
            upstream = HandlerNode("stage", stage, [ingress], on_error=on_error)
            consumers.append(upstream)
        sink = SqliteSink(db, kind, key=key, schema=schema)
        consumers.append(HandlerNode(f"store_{kind}", sink, [upstream]))
    return PipelineExecutor(producers, consumers, **executor_options)
