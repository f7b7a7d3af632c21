"""Keyed routing: ``HandlerNode(key=...)`` splits messages by key over its lanes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import pytest
from pipelines import TIMEOUT

from asyncpipe import HandlerNode, PipelineExecutor, reject
from asyncpipe._keys import lane_of, split_by_lane
from asyncpipe.state import stable_hash
from asyncpipe.testing import CollectingSink


def test_stable_hash_is_the_same_in_another_process() -> None:
    keys: list[Any] = ["client-7", "ação", 12, -3, b"\x00k", ("a", 1)]
    code = (
        "from asyncpipe.state import stable_hash; "
        "print([stable_hash(k) for k in ['client-7', 'ação', 12, -3, b'\\x00k', ('a', 1)]])"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert other.stdout.strip() == str([stable_hash(k) for k in keys])


def test_stable_hash_of_known_values() -> None:
    # Fixed values: routing must not change between releases either.
    assert stable_hash(12) == 12
    assert stable_hash(-1) == 2**64 - 1
    assert stable_hash("abc") == 0x352441C2  # CRC-32 of b"abc"


def test_split_keeps_arrival_order_and_positions_per_lane() -> None:
    records = [{"k": k, "i": i} for i, k in enumerate("abcabcaab")]
    parts = split_by_lane(records, lambda r: r["k"], 3)
    for lane, (part, indices) in parts.items():
        assert [records[i] for i in indices] == part
        assert indices == sorted(indices)
        assert {lane_of(r["k"], 3) for r in part} == {lane}
    assert sorted(i for _, indices in parts.values() for i in indices) == list(range(9))


class Tagging:
    """Records which key each call saw, in order, and passes the records on."""

    def __init__(self) -> None:
        self.seen: dict[str, list[int]] = {}
        self.calls: list[set[str]] = []

    async def __call__(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.calls.append({r["k"] for r in records})
        for record in records:
            self.seen.setdefault(record["k"], []).append(record["seq"])
            await asyncio.sleep(0)  # let other lanes interleave
        return records


def batches(n: int, size: int, keys: int) -> list[list[dict[str, Any]]]:
    seq = 0
    out = []
    for _ in range(n):
        batch = []
        for j in range(size):
            batch.append({"k": f"key{(seq * 7 + j) % keys}", "seq": seq})
            seq += 1
        out.append(batch)
    return out


async def test_each_key_is_handled_by_one_lane_in_arrival_order() -> None:
    data = batches(40, 25, 13)
    handler = Tagging()
    sink = CollectingSink()
    source = HandlerNode("source", data)
    keyed = HandlerNode("keyed", handler, [source], key=lambda r: r["k"], workers=4)
    out = HandlerNode("sink", sink, [keyed])
    async with asyncio.timeout(TIMEOUT):
        await PipelineExecutor([source], [keyed, out]).run()
    expected: dict[str, list[int]] = {}
    for batch in data:
        for record in batch:
            expected.setdefault(record["k"], []).append(record["seq"])
    assert handler.seen == expected
    # A call never mixes lanes.
    assert all(len({lane_of(k, 4) for k in call}) == 1 for call in handler.calls)
    received = sorted(r["seq"] for message in sink.items for r in message)
    assert received == list(range(1000))


async def test_receipt_counts_every_item_across_the_split() -> None:
    def drop_odd(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kept = []
        for index, record in enumerate(records):
            if record["seq"] % 10 == 3:
                reject(record, "three", index=index)
            elif record["seq"] % 2 == 0:
                kept.append(record)
        return kept

    sink = CollectingSink()
    ingest = HandlerNode("ingest")
    keyed = HandlerNode("keyed", drop_odd, [ingest], key=lambda r: r["k"], workers=3)
    out = HandlerNode("sink", sink, [keyed])
    async with asyncio.timeout(TIMEOUT):
        async with PipelineExecutor([ingest], [keyed, out]) as executor:
            receipt = await executor.submit("ingest", batches(1, 100, 9)[0])
            await receipt
    assert receipt.items == {
        "committed": 50,
        "filtered": 40,
        "dead_lettered": 10,
        "skipped": 0,
        "absorbed": 0,
    }
    assert len(receipt.dead_letters) == 10


async def test_a_message_that_is_not_a_list_is_one_record() -> None:
    sink = CollectingSink()
    source = HandlerNode("source", [{"k": "a", "v": 1}, {"k": "b", "v": 2}, []])
    keyed = HandlerNode("keyed", lambda m: m, [source], key=lambda r: r["k"], workers=2)
    out = HandlerNode("sink", sink, [keyed])
    async with asyncio.timeout(TIMEOUT):
        await PipelineExecutor([source], [keyed, out]).run()
    assert sorted(map(repr, sink.items)) == sorted(
        map(repr, [{"k": "a", "v": 1}, {"k": "b", "v": 2}, []])
    )


def test_key_must_be_callable() -> None:
    with pytest.raises(TypeError, match="key must be a function"):
        HandlerNode("n", lambda m: m, ["x"], key=3)  # type: ignore[arg-type]
    node = HandlerNode("n", lambda m: m, ["x"], key="k")
    assert node.key is not None and node.key({"k": 7}) == 7 and node.key_field == "k"
