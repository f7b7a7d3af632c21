"""Replies and dead letters stay bounded whatever the items hold (issue 11, item 4)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from ingest_helpers import rows, serving, transactions
from ingest_pipeline import bank_pipeline

from asyncpipe.demo.service import transaction_batch
from asyncpipe.demo.v1 import bank_pb2 as pb
from asyncpipe.ingest._replies import MAX_REASON_CHARS, clip, response

LIMIT = 1024 * 1024  # the server's (and so the reply's) message size limit in these tests


async def test_a_batch_of_huge_invalid_values_is_answered_within_the_message_limit(
    tmp_path: Path,
) -> None:
    db = tmp_path / "bank.db"
    items = transactions(500)
    for item in items[1:]:
        item["currency"] = "X" * 2040  # each bad value alone is as long as a whole item
    batch = transaction_batch(items, "huge")
    assert LIMIT * 0.98 < batch.ByteSize() < LIMIT  # the request itself is acceptable
    async with serving(bank_pipeline(db), max_message_bytes=LIMIT) as served:
        reply = await served.client.send(batch)
        letters = list(served.executor.dead_letters)
    assert reply.success, reply.message
    assert (reply.items_processed, reply.items_rejected) == (1, 499)
    assert len(reply.rejections) == 499
    assert reply.ByteSize() < LIMIT // 4
    first = reply.rejections[0]
    assert first.index == 1
    assert first.reason.startswith("unknown currency 'XXXX")
    assert "… (2040 chars)" in first.reason
    assert len(first.reason) < 200
    assert rows(db, "SELECT id FROM transactions") == [(1,)]
    # The dead letters are bounded too: what failed is recognisable, not copied whole.
    assert len(letters) == 499
    assert max(len(letter.payload) for letter in letters) <= 1100
    assert max(len(letter.error_message) for letter in letters) < 300
    assert letters[0].payload.startswith("id: 2 client_id: 3")


def test_the_listed_rejections_stop_at_the_budget_and_the_message_says_so() -> None:
    rejections = [(i, f"reason {i} " + "r" * 80) for i in range(1000)]
    reply = response(
        pb.IngestResponse,
        success=True,
        message="stored; rejections listed",
        batch_id="b",
        received=1001,
        rejected=1000,
        rejections=rejections,
        budget=10_000,
    )
    assert 0 < len(reply.rejections) < 1000
    assert reply.ByteSize() < 10_000 + 200
    assert reply.items_rejected == 1000  # the count is whole
    listed = len(reply.rejections)
    assert reply.message == (
        f"stored; rejections listed (1000 rejections, the first {listed} listed)"
    )
    assert [r.index for r in reply.rejections] == list(range(listed))


def test_a_reason_from_the_pipeline_is_clipped() -> None:
    assert clip("a" * 10, 10) == "a" * 10
    assert clip("a" * 11, 10) == "a" * 10 + "… (11 chars)"
    assert len(clip("x" * 10_000)) <= MAX_REASON_CHARS + 20


async def test_an_overlong_batch_id_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    db = tmp_path / "bank.db"
    items = transactions(2)
    items[1]["currency"] = "XYZ"
    async with serving(bank_pipeline(db), client_options={"retries": 0}) as served:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await served.client.send_transactions(items, batch_id="i" * 129)
        letters = list(served.executor.dead_letters)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == (
        f"batch_id {'i' * 40!r}… (129 chars) is too long: at most 128 chars"
    )
    assert letters == []
    assert rows(db, "SELECT id FROM transactions") == []
