"""A batch sent again is not dead-lettered again (issue 11, item 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ingest_helpers import rows, serving, transactions
from ingest_pipeline import bank_pipeline

from asyncpipe import reject
from asyncpipe.connectors import SqliteDeadLetterSink


def no_big_amounts(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    kept = []
    for i, record in enumerate(batch):
        if record["amount"] > 500:
            reject(record, "needs review", index=i)
        else:
            kept.append(record)
    return kept


async def test_a_batch_sent_three_times_leaves_one_dead_letter_per_bad_item(
    tmp_path: Path,
) -> None:
    db = tmp_path / "bank.db"
    items = transactions(4)
    items[1]["currency"] = "XYZ"  # refused by the intake
    items[2]["amount"] = 900.0  # rejected by the pipeline's stage
    executor = bank_pipeline(db, stage=no_big_amounts, dead_letter_sink=SqliteDeadLetterSink(db))
    async with serving(executor, transactions="stage") as served:
        for _ in range(3):
            reply = await served.client.send_transactions(items, batch_id="again")
            assert (reply.success, reply.items_rejected) == (True, 2)
        other = await served.client.send_transactions(items, batch_id="another")
        assert other.items_rejected == 2
    letters = rows(db, "SELECT origin, error_message FROM dead_letters ORDER BY id")
    # Per batch: the intake's refusal of item 1 and the stage's rejection, once each.
    assert [origin for origin, _ in letters] == [
        "grpc:transactions:again",
        "grpc:transactions:again",
        "grpc:transactions:another",
        "grpc:transactions:another",
    ]
    assert sorted(message.split(":")[0] for _, message in letters[:2]) == [
        "batch 'again' item 1",
        "needs review",
    ]
    assert rows(db, "SELECT count(*) FROM transactions") == [(2,)]
