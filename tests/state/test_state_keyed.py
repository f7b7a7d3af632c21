"""Keyed state: KeyedHandler and stateful_map, in memory and over a persistent store."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from pipelines import TIMEOUT

from asyncpipe import HandlerError, HandlerNode, PipelineAborted, PipelineExecutor, reject
from asyncpipe.state import (
    JsonCodec,
    KeyedHandler,
    PickleCodec,
    SqliteStateStore,
    StateStore,
    stateful_map,
)
from asyncpipe.testing import CollectingSink

Record = dict[str, Any]


class Totals(KeyedHandler):
    """Per key: count and sum; emits the running totals once per message and key."""

    def initial(self, key: str) -> dict[str, Any]:
        return {"n": 0, "sum": 0}

    async def update(
        self, key: str, state: dict[str, Any], records: list[Record]
    ) -> tuple[dict[str, Any] | None, list[Record]]:
        for record in records:
            if record["v"] < 0:
                raise ValueError(f"negative value {record['v']}")
            if record["v"] == 13:
                reject(record, "unlucky")
                continue
            state = {"n": state["n"] + 1, "sum": state["sum"] + record["v"]}
        if state["sum"] > 1000:
            return None, [{"key": key, "reset": True}]
        return state, [{"key": key, **state}]


def keyed_pipeline(
    handler: Any, store: StateStore | None = None, workers: int = 1, **options: Any
) -> tuple[PipelineExecutor, CollectingSink]:
    sink = CollectingSink()
    ingest = HandlerNode("ingest")
    node = HandlerNode("state", handler, [ingest], key=lambda r: r["k"], workers=workers, **options)
    out = HandlerNode("sink", sink, [node])
    return PipelineExecutor([ingest], [node, out], state_store=store), sink


async def feed(
    executor: PipelineExecutor, batches: Sequence[tuple[str | None, list[Record]]]
) -> list[Any]:
    receipts = []
    async with asyncio.timeout(TIMEOUT):
        async with executor:
            for origin, batch in batches:
                receipts.append(await executor.submit("ingest", batch, origin=origin))
            for receipt in receipts:
                await receipt
    return receipts


def recs(*pairs: tuple[str, int]) -> list[Record]:
    return [{"k": k, "v": v} for k, v in pairs]


async def test_update_sees_each_keys_records_in_order_and_keeps_state() -> None:
    executor, sink = keyed_pipeline(Totals(), workers=3)
    await feed(executor, [(None, recs(("a", 1), ("b", 2), ("a", 3))), (None, recs(("a", 10)))])
    latest = {out["key"]: out for message in sink.items for out in message}
    assert latest == {"a": {"key": "a", "n": 3, "sum": 14}, "b": {"key": "b", "n": 1, "sum": 2}}


async def test_none_as_new_state_deletes_the_key() -> None:
    executor, sink = keyed_pipeline(Totals())
    await feed(executor, [(None, recs(("a", 999))), (None, recs(("a", 2))), (None, recs(("a", 5)))])
    assert [m[0] for m in sink.items] == [
        {"key": "a", "n": 1, "sum": 999},
        {"key": "a", "reset": True},
        {"key": "a", "n": 1, "sum": 5},
    ]


async def test_a_failing_update_dead_letters_its_keys_records_and_keeps_its_state() -> None:
    executor, sink = keyed_pipeline(Totals())
    receipts = await feed(
        executor,
        [
            (None, recs(("a", 1))),
            (None, recs(("a", -1), ("b", 2), ("a", 5))),
            (None, recs(("a", 3))),
        ],
    )
    letters = executor.dead_letters
    assert [(dl.payload["v"], dl.index) for dl in letters] == [(-1, 0), (5, 2)]
    assert "negative value -1" in letters[0].error_message
    assert receipts[1].items["dead_lettered"] == 2
    assert sink.items[-1] == [{"key": "a", "n": 2, "sum": 4}]


async def test_reject_inside_update_is_a_dead_letter() -> None:
    executor, sink = keyed_pipeline(Totals())
    [receipt] = await feed(executor, [("o1", recs(("a", 13), ("a", 2)))])
    assert [(dl.error_message, dl.origin) for dl in executor.dead_letters] == [("unlucky", "o1")]
    assert receipt.items["dead_lettered"] == 1
    assert sink.items == [[{"key": "a", "n": 1, "sum": 2}]]


async def test_on_error_fail_stops_the_pipeline() -> None:
    executor, _ = keyed_pipeline(Totals(), on_error="fail")
    with pytest.raises(HandlerError, match="negative value"):
        await feed(executor, [(None, recs(("a", -1)))])


async def test_a_message_that_emits_nothing_is_absorbed() -> None:
    counter = stateful_map(lambda n, r: (n + 1, None), lambda k: 0)
    executor, sink = keyed_pipeline(counter)
    [receipt] = await feed(executor, [(None, recs(("a", 1), ("b", 1)))])
    assert sink.items == []
    assert receipt.items["absorbed"] == 2 and receipt.counts["absorbed"] == 1


async def test_stateful_map_counts_per_key() -> None:
    def count(n: int, record: Record) -> tuple[int, Record]:
        return n + 1, {"k": record["k"], "seq": n + 1}

    executor, sink = keyed_pipeline(stateful_map(count, lambda k: 0), workers=2)
    await feed(executor, [(None, recs(("a", 0), ("b", 0), ("a", 0))), (None, recs(("b", 0)))])
    seen = sorted((out["k"], out["seq"]) for message in sink.items for out in message)
    assert seen == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]


async def test_a_replayed_origin_does_not_touch_state_again() -> None:
    executor, sink = keyed_pipeline(Totals(), workers=2)
    batch = recs(("a", 1), ("b", 2), ("a", 13))
    receipts = await feed(
        executor, [("batch-1", batch), ("batch-1", batch), ("batch-2", recs(("a", 5)))]
    )
    latest = {out["key"]: out for message in sink.items for out in message}
    assert latest["a"] == {"key": "a", "n": 2, "sum": 6}
    # The replay answers like the first time: same rejection, nothing counted twice.
    assert receipts[1].items["dead_lettered"] == 1
    assert [r.dead_letters[0].index for r in receipts[:2]] == [2, 2]


async def test_state_survives_a_restart_over_a_persistent_store(
    persistent_store: Callable[..., StateStore],
) -> None:
    first, _ = keyed_pipeline(Totals(), persistent_store(), workers=2)
    await feed(first, [("b1", recs(("a", 1), ("b", 2))), ("b2", recs(("a", 3)))])
    second, sink = keyed_pipeline(Totals(), persistent_store(), workers=2)
    # b2 again (its ack was lost, say), then something new.
    await feed(second, [("b2", recs(("a", 3))), ("b3", recs(("a", 10), ("b", 1)))])
    latest = {out["key"]: out for message in sink.items for out in message}
    assert latest == {"a": {"key": "a", "n": 3, "sum": 14}, "b": {"key": "b", "n": 2, "sum": 3}}


async def test_a_small_cache_over_the_store_loses_nothing(
    persistent_store: Callable[..., StateStore],
) -> None:
    class Small(Totals):
        cache_size = 2

    executor, sink = keyed_pipeline(Small(), persistent_store())
    batches = [(f"b{i}", recs((f"k{i % 7}", i))) for i in range(40)]
    await feed(executor, batches)
    latest = {out["key"]: out["sum"] for message in sink.items for out in message}
    expected = {f"k{j}": sum(i for i in range(40) if i % 7 == j and i != 13) for j in range(7)}
    assert latest == expected  # 13 is rejected


@pytest.mark.parametrize("codec", [PickleCodec(), JsonCodec()])
async def test_state_round_trips_through_the_codec(codec: Any, tmp_path: Path) -> None:
    class Coded(Totals):
        pass

    Coded.codec = codec
    first, _ = keyed_pipeline(Coded(), SqliteStateStore(tmp_path / "s.db"))
    await feed(first, [("b1", recs(("a", 1), ("b", 2)))])
    second, sink = keyed_pipeline(Coded(), SqliteStateStore(tmp_path / "s.db"))
    await feed(second, [("b2", recs(("a", 4)))])
    assert sink.items == [[{"key": "a", "n": 2, "sum": 5}]]
    assert codec.decode(codec.encode({"x": [1, 2.5, "é"]})) == {"x": [1, 2.5, "é"]}


def test_stateful_nodes_refuse_what_they_cannot_do() -> None:
    with pytest.raises(ValueError, match="cpu=True"):
        HandlerNode("s", Totals(), ["x"], key=lambda r: r, cpu=True)
    with pytest.raises(ValueError, match="needs key="):
        HandlerNode("s", Totals(), ["x"], workers=2)


async def test_outputs_committed_but_not_delivered_are_sent_again_at_start(
    persistent_store: Callable[..., StateStore],
) -> None:
    arrived = asyncio.Event()

    async def stuck(message: Any) -> None:  # a sink that never commits
        arrived.set()
        await asyncio.Event().wait()

    ingest = HandlerNode("ingest")
    node = HandlerNode("state", Totals(), [ingest], key=lambda r: r["k"])
    out = HandlerNode("sink", stuck, [node])
    first = PipelineExecutor([ingest], [node, out], state_store=persistent_store())
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(PipelineAborted):
            async with first:
                receipt = await first.submit("ingest", recs(("a", 1)), origin="b1")
                await arrived.wait()  # committed in the store, not delivered
                first.abort()  # the crash
                await receipt
    second, sink = keyed_pipeline(Totals(), persistent_store())
    await feed(second, [("b1", recs(("a", 1))), ("b2", recs(("a", 2)))])
    # b1's output first (sent again at start), then b2's; b1 itself was not applied twice.
    assert sink.items == [[{"key": "a", "n": 1, "sum": 1}], [{"key": "a", "n": 2, "sum": 3}]]
