"""Embedding asyncpipe in your own asyncio application.

The pipeline runs in the background (``async with``) while the application submits work
and awaits each message's receipt -- here a toy "orders" service that acknowledges an
order only once it is stored. Run: ``python demo/embed_in_app.py``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from asyncpipe import HandlerNode, PipelineExecutor, reject
from asyncpipe.connectors import SqliteSink


def validate(orders: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the orders with a positive quantity; dead-letter the others, by index."""
    kept = []
    for index, order in enumerate(orders):
        if order["quantity"] > 0:
            kept.append({**order, "total": round(order["quantity"] * order["price"], 2)})
        else:
            reject(order, f"quantity must be > 0, got {order['quantity']}", index=index)
    return kept


async def main() -> None:
    db = Path(tempfile.mkdtemp()) / "orders.db"
    ingest = HandlerNode("orders")  # an ingress: fed by submit()
    check = HandlerNode("validate", validate, [ingest])
    store = HandlerNode("store", SqliteSink(db, "orders", key="id"), [check])
    async with PipelineExecutor([ingest], [check, store]) as pipeline:
        # The application's own work goes on here; each request awaits its receipt.
        batches = [
            [{"id": 1, "quantity": 2, "price": 9.9}, {"id": 2, "quantity": 0, "price": 5.0}],
            [{"id": 3, "quantity": 1, "price": 120.0}],
        ]
        receipts = [await pipeline.submit("orders", batch) for batch in batches]
        for receipt in asyncio.as_completed(receipts):
            done = await receipt
            print(  # noqa: T201 - an example program
                f"receipt #{done.id}: {done.items['committed']} stored, "
                f"{done.items['dead_lettered']} rejected "
                f"{[d.error_message for d in done.dead_letters]}"
            )
    # Leaving the block drained the pipeline: everything acknowledged is in the table.
    with sqlite3.connect(db) as conn:
        print(conn.execute("SELECT id, total FROM orders ORDER BY id").fetchall())  # noqa: T201


if __name__ == "__main__":
    asyncio.run(main())
