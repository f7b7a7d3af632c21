"""Poison isolation: a list message whose handler keeps failing is handled in ever smaller
parts, so the good items go on and only the failing ones are dead-lettered, each alone."""

from __future__ import annotations

import math
from typing import Any

import pytest
import workers
from pipelines import WORKER_TIMEOUT

from asyncpipe import HandlerNode, Outcome, PipelineExecutor, reject
from asyncpipe.testing import CollectingSink, run_handler


def to_float32(batch: list[float]) -> list[float]:
    """Fails for the whole batch when any value overflows float32 (as a model would)."""
    for value in batch:
        if abs(value) > 3.4e38 or not math.isfinite(value):
            raise OverflowError(f"{value!r} is too large for float32")
    return [value * 2 for value in batch]


async def submit_one(
    handler: Any, batch: list[Any], *, sink: CollectingSink | None = None, **options: Any
) -> tuple[Any, PipelineExecutor]:
    """ingest -> handler node (-> sink); submit ``batch`` once, return its receipt."""
    ingest = HandlerNode("ingest")
    node = HandlerNode("node", handler, [ingest], **options)
    consumers = [node] if sink is None else [node, HandlerNode("sink", sink, [node])]
    async with PipelineExecutor([ingest], consumers, max_workers=2) as executor:
        receipt = await executor.submit("ingest", batch, origin="batch-1")
        await receipt.wait(WORKER_TIMEOUT)
    return receipt, executor


async def test_one_poisonous_item_is_dead_lettered_alone_and_the_rest_go_on() -> None:
    batch = [float(i) for i in range(200)]
    batch[137] = 3.5e38
    sink = CollectingSink()

    receipt, executor = await submit_one(to_float32, batch, sink=sink)

    [out] = sink.items
    assert out == [v * 2 for i, v in enumerate(batch) if i != 137]  # one message, in order
    [letter] = executor.dead_letters
    assert (letter.node, letter.index, letter.payload) == ("node", 137, 3.5e38)
    assert letter.error_type == "OverflowError"
    assert "too large for float32" in letter.error_message
    assert letter.origin == "batch-1"
    assert receipt.items[Outcome.COMMITTED] == 199
    assert receipt.items[Outcome.DEAD_LETTERED] == 1


async def test_in_a_sink_the_good_items_are_committed_and_each_bad_one_has_its_error() -> None:
    committed: list[list[float]] = []

    def store(batch: list[float]) -> None:
        to_float32(batch)
        committed.append(batch)

    batch = [1.0, math.inf, 2.0, 3.0, 1e308, 4.0]
    receipt, executor = await submit_one(store, batch)

    assert sorted(v for part in committed for v in part) == [1.0, 2.0, 3.0, 4.0]
    assert sorted((d.index, d.payload) for d in executor.dead_letters) == [
        (1, math.inf),
        (4, 1e308),
    ]
    assert receipt.items[Outcome.COMMITTED] == 4
    assert receipt.items[Outcome.DEAD_LETTERED] == 2
    assert sum(receipt.items.values()) == len(batch)


async def test_a_message_whose_every_item_fails_leaves_one_letter_per_item() -> None:
    receipt, executor = await submit_one(to_float32, [math.inf] * 3, sink=CollectingSink())

    assert sorted(d.index for d in executor.dead_letters if d.index is not None) == [0, 1, 2]
    assert receipt.items[Outcome.DEAD_LETTERED] == 3
    assert receipt.items[Outcome.COMMITTED] == 0


async def test_rejections_made_by_the_parts_keep_their_index_in_the_whole_message() -> None:
    def check(batch: list[int]) -> list[int]:
        if 13 in batch:
            raise ValueError("13 is cursed")
        for i, value in enumerate(batch):
            if value % 5 == 0:
                reject(value, "multiple of five", index=i)
        return [v for v in batch if v % 5]

    batch = list(range(1, 21))
    sink = CollectingSink()
    receipt, executor = await submit_one(check, batch, sink=sink)

    letters = sorted((d.index, d.payload, d.error_type) for d in executor.dead_letters)
    assert letters == [
        (4, 5, "Rejected"),
        (9, 10, "Rejected"),
        (12, 13, "ValueError"),
        (14, 15, "Rejected"),
        (19, 20, "Rejected"),
    ]
    assert sink.items == [[v for v in batch if v % 5 and v != 13]]
    assert receipt.items[Outcome.COMMITTED] == 15


async def test_isolation_works_in_worker_processes() -> None:
    batch = [float(i) for i in range(40)]
    batch[3] = 1e39
    sink = CollectingSink()

    receipt, executor = await submit_one(workers.to_float32, batch, sink=sink, cpu=True)

    assert [(d.index, d.payload) for d in executor.dead_letters] == [(3, 1e39)]
    assert sink.items == [[v * 2 for i, v in enumerate(batch) if i != 3]]
    assert receipt.items[Outcome.COMMITTED] == 39


async def test_isolation_works_for_parallel_chunks() -> None:
    batch = [float(i) for i in range(40)]
    batch[25] = 1e39
    sink = CollectingSink()

    _, executor = await submit_one(to_float32, batch, sink=sink, parallel=True, chunks=4)

    assert [(d.index, d.payload) for d in executor.dead_letters] == [(25, 1e39)]
    assert sink.items == [[v * 2 for i, v in enumerate(batch) if i != 25]]


async def test_a_generator_handler_yields_the_good_items_outputs() -> None:
    def each(batch: list[float]) -> Any:
        yield from to_float32(batch)

    batch = [1.0, 1e39, 2.0]
    sink = CollectingSink()
    _, executor = await submit_one(each, batch, sink=sink)

    assert sink.items == [2.0, 4.0]
    assert [d.index for d in executor.dead_letters] == [1]


async def test_isolation_can_be_turned_off() -> None:
    batch = [1.0, 1e39, 2.0]
    receipt, executor = await submit_one(
        to_float32, batch, sink=CollectingSink(), isolate_failures=False
    )

    [letter] = executor.dead_letters
    assert (letter.index, letter.payload) == (None, batch)
    assert receipt.items[Outcome.DEAD_LETTERED] == 3


async def test_under_the_skip_policy_only_the_failing_items_are_skipped() -> None:
    sink = CollectingSink()
    receipt, executor = await submit_one(
        to_float32, [1.0, 1e39, 2.0], sink=sink, on_error="skip", isolate_failures=True
    )

    assert sink.items == [[2.0, 4.0]]
    assert executor.dead_letters == []
    assert receipt.items[Outcome.SKIPPED] == 1


async def test_retries_are_spent_on_the_whole_message_before_it_is_split() -> None:
    calls: list[int] = []

    def counted(batch: list[float]) -> list[float]:
        calls.append(len(batch))
        return to_float32(batch)

    await submit_one(counted, [1.0, 2.0, 1e39, 3.0], retries=2, backoff=0)

    assert calls[:3] == [4, 4, 4]  # the whole message, then its parts once each
    assert calls[3:] == [2, 2, 1, 1]


def test_isolation_cannot_be_asked_of_a_fail_fast_node() -> None:
    with pytest.raises(ValueError, match="isolate_failures"):
        HandlerNode("n", to_float32, ["x"], on_error="fail", isolate_failures=True)


async def test_a_single_item_message_fails_as_before() -> None:
    run = await run_handler(to_float32, [[1e39]])

    [letter] = run.dead_letters
    assert (letter.index, letter.payload) == (None, [1e39])
