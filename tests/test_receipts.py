"""Receipts: one per submitted message, resolved once everything derived from it has ended."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import pytest
from pipelines import TIMEOUT, fed_by_submit
from workers import reject_odd

from asyncpipe import (
    HandlerNode,
    Outcome,
    PipelineAborted,
    PipelineClosed,
    PipelineExecutor,
    Receipt,
    Tracked,
    reject,
)
from asyncpipe.testing import CollectingSink


async def submit_one(
    producers: Sequence[HandlerNode],
    consumers: Sequence[HandlerNode],
    message: Any,
    node: str = "ingest",
) -> tuple[Receipt, PipelineExecutor]:
    """Run the pipeline, submit one message, wait for its receipt, drain.

    Also checks that the receipt's figures were final when it resolved: nothing derived
    from the message may end after that.
    """
    async with asyncio.timeout(10):
        async with PipelineExecutor(producers, consumers) as executor:
            receipt = await executor.submit(node, message)
            await receipt.wait(10)
            at_resolution = (dict(receipt.counts), dict(receipt.items))
    assert (receipt.counts, receipt.items) == at_resolution, "counted after resolving"
    return receipt, executor


def chain(*steps: tuple[str, Any, dict[str, Any]]) -> tuple[list[HandlerNode], list[HandlerNode]]:
    """ingest -> step -> step ... (each step a (name, handler, options) triple)."""
    ingest = HandlerNode("ingest")
    nodes, upstream = [], ingest
    for name, handler, options in steps:
        upstream = HandlerNode(name, handler, [upstream], **options)
        nodes.append(upstream)
    return [ingest], nodes


class Sink(CollectingSink):
    """A collecting sink that takes a few loop turns per message, so a receipt that resolved
    before its sink finished would be caught."""

    async def __call__(self, message: Any) -> None:
        for _ in range(3):
            await asyncio.sleep(0)
        await super().__call__(message)


class Flaky:
    """Fails the first ``failures`` calls, then echoes."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self, message: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"attempt {self.calls} failed")
        return message


def boom(message: Any) -> Any:
    raise ValueError("boom")


# -- outcomes ------------------------------------------------------------------------------


async def test_simple_chain_commits_once() -> None:
    sink = Sink()
    receipt, _ = await submit_one(*chain(("double", lambda x: x * 2, {}), ("sink", sink, {})), 21)
    assert receipt.done()
    assert receipt.counts[Outcome.COMMITTED] == 1
    assert receipt.committed == 1
    assert sum(receipt.counts.values()) == 1
    assert sink.items == [42]


async def test_receipt_await_returns_the_receipt_itself() -> None:
    ingest = HandlerNode("ingest")
    sink = HandlerNode("sink", Sink(), [ingest])
    async with asyncio.timeout(10):
        async with PipelineExecutor([ingest], [sink]) as executor:
            receipt = await executor.submit("ingest", [1, 2])
            assert await receipt is receipt
    assert receipt.duration is not None and receipt.duration >= 0


async def test_fan_out_to_two_sinks_commits_twice() -> None:
    ingest = HandlerNode("ingest")
    left = HandlerNode("left", Sink(), [ingest])
    right = HandlerNode("right", Sink(), [ingest])
    receipt, _ = await submit_one([ingest], [left, right], [1, 2, 3])
    assert receipt.committed == 2
    assert receipt.items[Outcome.COMMITTED] == 6


async def test_handler_returning_none_is_counted_as_filtered() -> None:
    receipt, _ = await submit_one(
        *chain(("filter", lambda x: None, {}), ("sink", Sink(), {})), [1, 2]
    )
    assert receipt.filtered == 1
    assert receipt.committed == 0
    assert receipt.items[Outcome.FILTERED] == 2


async def test_generator_with_three_outputs_commits_three_times() -> None:
    def explode(batch: list[int]) -> Iterator[int]:
        yield from batch

    sink = Sink()
    receipt, _ = await submit_one(*chain(("explode", explode, {}), ("sink", sink, {})), [7, 8, 9])
    assert receipt.committed == 3
    assert sink.items == [7, 8, 9]


async def test_async_generator_yielding_nothing_is_counted_as_filtered() -> None:
    async def nothing(message: Any) -> AsyncIterator[Any]:
        empty: tuple[Any, ...] = ()
        for item in empty:
            yield item

    receipt, _ = await submit_one(*chain(("nothing", nothing, {}), ("sink", Sink(), {})), "x")
    assert receipt.filtered == 1
    assert receipt.committed == 0


async def test_parallel_chunking_still_commits_one_message_with_all_its_items() -> None:
    def echo(chunk: list[int]) -> list[int]:
        return chunk

    receipt, _ = await submit_one(
        *chain(("chunked", echo, {"parallel": True, "chunks": 3}), ("sink", Sink(), {})),
        list(range(10)),
    )
    assert receipt.committed == 1
    assert receipt.items[Outcome.COMMITTED] == 10


async def test_rejected_items_are_counted_as_dead_lettered_and_the_rest_committed() -> None:
    receipt, _ = await submit_one(
        *chain(("evens", reject_odd, {}), ("sink", Sink(), {})), [0, 1, 2, 3, 4]
    )
    assert receipt.dead_lettered == 2
    assert receipt.items[Outcome.DEAD_LETTERED] == 2
    assert receipt.committed == 1
    assert receipt.items[Outcome.COMMITTED] == 3


async def test_receipt_carries_the_rejected_items_dead_letters_with_their_index() -> None:
    receipt, executor = await submit_one(
        *chain(("evens", reject_odd, {}), ("sink", Sink(), {})), [0, 1, 2, 3]
    )
    found = sorted((letter.index, letter.payload) for letter in receipt.dead_letters)
    assert found == [(1, 1), (3, 3)]
    assert all(letter.receipt_id == receipt.id for letter in receipt.dead_letters)
    assert all(letter.error_message == "odd" for letter in receipt.dead_letters)
    assert len(executor.dead_letters) == 2


async def test_items_rejected_by_a_sink_are_not_counted_as_committed() -> None:
    def store(batch: list[int]) -> None:
        reject_odd(batch)

    ingest = HandlerNode("ingest")
    sink = HandlerNode("store", store, [ingest])
    receipt, _ = await submit_one([ingest], [sink], [0, 1, 2, 3, 4])
    assert receipt.items[Outcome.DEAD_LETTERED] == 2
    # Every item of the batch ends exactly one way.
    assert receipt.items[Outcome.COMMITTED] == 3


async def test_retries_that_eventually_succeed_commit_once() -> None:
    flaky = Flaky(failures=2)
    receipt, executor = await submit_one(
        *chain(("flaky", flaky, {"retries": 2, "backoff": 0}), ("sink", Sink(), {})),
        "payload",
    )
    assert receipt.committed == 1
    assert receipt.dead_lettered == 0
    assert executor.metrics()["flaky"].retries == 2


async def test_message_failing_after_its_retries_is_dead_lettered() -> None:
    receipt, _ = await submit_one(
        *chain(
            ("boom", boom, {"retries": 1, "backoff": 0, "isolate_failures": False}),
            ("sink", Sink(), {}),
        ),
        [1, 2],
    )
    assert receipt.dead_lettered == 1
    assert receipt.items[Outcome.DEAD_LETTERED] == 2
    assert receipt.committed == 0
    [letter] = receipt.dead_letters
    assert (letter.node, letter.attempts) == ("boom", 2)


async def test_skip_policy_counts_the_message_as_skipped() -> None:
    receipt, executor = await submit_one(
        *chain(("boom", boom, {"on_error": "skip"}), ("sink", Sink(), {})), "x"
    )
    assert receipt.skipped == 1
    assert receipt.dead_lettered == 0
    assert receipt.dead_letters == []
    assert executor.dead_letters == []


# -- timing --------------------------------------------------------------------------------


async def test_receipt_is_not_done_before_the_sink_has_finished() -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_sink(message: Any) -> None:
        entered.set()
        await release.wait()

    ingest = HandlerNode("ingest")
    sink = HandlerNode("sink", slow_sink, [ingest])
    async with asyncio.timeout(10):
        async with PipelineExecutor([ingest], [sink]) as executor:
            receipt = await executor.submit("ingest", "m")
            await entered.wait()
            for _ in range(5):
                await asyncio.sleep(0)
            assert not receipt.done()
            release.set()
            await receipt.wait(10)
    assert receipt.committed == 1


async def test_receipt_wait_times_out_without_failing_the_receipt() -> None:
    release = asyncio.Event()

    async def slow_sink(message: Any) -> None:
        await release.wait()

    ingest = HandlerNode("ingest")
    sink = HandlerNode("sink", slow_sink, [ingest])
    async with asyncio.timeout(10):
        async with PipelineExecutor([ingest], [sink]) as executor:
            receipt = await executor.submit("ingest", "m")
            with pytest.raises(TimeoutError):
                await receipt.wait(0)
            release.set()
            await receipt.wait(10)
    assert receipt.committed == 1


# -- submit --------------------------------------------------------------------------------


async def test_submit_to_an_unknown_node_raises_key_error() -> None:
    ingest = HandlerNode("ingest")
    sink = HandlerNode("sink", Sink(), [ingest])
    async with asyncio.timeout(10):
        async with PipelineExecutor([ingest], [sink]) as executor:
            with pytest.raises(KeyError, match="nowhere"):
                await executor.submit("nowhere", 1)


async def test_submit_to_a_source_node_raises_value_error() -> None:
    src = HandlerNode("src", [1, 2])
    sink = HandlerNode("sink", Sink(), [src])
    async with asyncio.timeout(10):
        async with PipelineExecutor([src], [sink]) as executor:
            with pytest.raises(ValueError, match="'src'"):
                await executor.submit("src", 3)


async def test_submit_before_start_raises_pipeline_closed() -> None:
    ingest = HandlerNode("ingest")
    sink = HandlerNode("sink", Sink(), [ingest])
    executor = PipelineExecutor([ingest], [sink])
    with pytest.raises(PipelineClosed):
        await executor.submit("ingest", 1)


async def test_submit_after_exit_raises_pipeline_closed() -> None:
    ingest = HandlerNode("ingest")
    sink = HandlerNode("sink", Sink(), [ingest])
    async with asyncio.timeout(10):
        async with PipelineExecutor([ingest], [sink]) as executor:
            pass
    with pytest.raises(PipelineClosed):
        await executor.submit("ingest", 1)


async def test_abort_makes_pending_receipts_raise_pipeline_aborted() -> None:
    entered = asyncio.Event()

    async def stuck(message: Any) -> None:
        entered.set()
        await asyncio.Event().wait()  # never set: only abort() ends this

    ingest = HandlerNode("ingest")
    sink = HandlerNode("sink", stuck, [ingest])
    async with asyncio.timeout(10):
        # Leaving the block re-raises the abort, like run() does after abort().
        with pytest.raises(PipelineAborted):
            async with PipelineExecutor([ingest], [sink]) as executor:
                receipt = await executor.submit("ingest", "m")
                await entered.wait()
                executor.abort()
                with pytest.raises(PipelineAborted):
                    await receipt.wait(10)
    assert receipt.done()


async def test_a_source_can_track_what_it_emits_with_one_receipt_for_several_items() -> None:
    receipts: list[Receipt] = []
    resolved: list[Receipt] = []

    async def source() -> AsyncIterator[Any]:
        receipt = Receipt("file")
        receipt.add_done_callback(resolved.append)
        receipts.append(receipt)
        for batch in ([1, 2], [3], [4, 6]):
            yield Tracked(batch, receipt)
        assert not receipt.done()  # the source's hold is still on it
        receipt.release()
        yield [7]  # untracked items flow as before

    def odd_only(batch: list[int]) -> list[int] | None:
        return [n for n in batch if n % 2] or None

    sink = CollectingSink()
    src = HandlerNode("src", source)
    keep = HandlerNode("odd", odd_only, [src])
    await asyncio.wait_for(
        PipelineExecutor([src], [keep, HandlerNode("sink", sink, [keep])]).run(), 10
    )
    [receipt] = receipts
    assert resolved == [receipt]
    assert receipt.counts[Outcome.COMMITTED] == 2 and receipt.counts[Outcome.FILTERED] == 1
    assert sink.items == [[1], [3], [7]]


async def test_a_tracked_receipt_still_pending_is_aborted_with_the_pipeline() -> None:
    receipt_box: list[Receipt] = []
    taken = asyncio.Event()

    async def source() -> AsyncIterator[Any]:
        receipt = Receipt("file")
        receipt_box.append(receipt)
        yield Tracked("x", receipt)
        receipt.release()

    async def stuck(message: Any) -> None:
        taken.set()
        await asyncio.Event().wait()

    src = HandlerNode("src", source)
    executor = PipelineExecutor([src], [HandlerNode("sink", stuck, [src])])
    called: list[Receipt] = []
    with pytest.raises(PipelineAborted):
        async with asyncio.timeout(10), executor:
            await taken.wait()
            receipt_box[0].add_done_callback(called.append)
            executor.abort()
    with pytest.raises(PipelineAborted):
        await receipt_box[0]
    assert called == []


async def test_the_runtimes_bookkeeping_is_not_on_the_receipt_users_hold() -> None:
    receipt = Receipt("ingest")

    # Counting and aborting are the runtime's: a user calling them would corrupt the counts.
    for name in ("fork", "settle", "record", "abort"):
        assert not hasattr(receipt, name), name
    for name in ("release", "wait", "add_done_callback", "done", "counts", "items"):
        assert hasattr(receipt, name), name

    receipt.release()
    assert (await receipt.wait(1)) is receipt


def reject_negative_rows(batch: list[tuple[Any, ...]]) -> None:
    """A sink for rows (tuples, as csv or sqlite give them): rejects negative amounts."""
    for i, row in enumerate(batch):
        if row[1] < 0:
            reject(row, "negative", index=i)


def reject_negative_rows_then_filter(batch: list[tuple[Any, ...]]) -> None:
    reject_negative_rows(batch)
    return None  # nothing left worth emitting


async def test_a_rejected_tuple_row_counts_as_one_item() -> None:
    executor = fed_by_submit(reject_negative_rows)
    batch = [("a", 1, "x"), ("b", -1, "y"), ("c", 2, "z")]

    async with asyncio.timeout(TIMEOUT):
        async with executor:
            receipt = await (await executor.submit("ingest", batch))

    assert receipt.items[Outcome.DEAD_LETTERED] == 1
    assert receipt.items[Outcome.COMMITTED] == 2
    assert [d.payload for d in receipt.dead_letters] == [("b", -1, "y")]


async def test_node_that_rejects_some_items_and_filters_counts_the_rest_as_filtered() -> None:
    ingest = HandlerNode("ingest")
    mid = HandlerNode("mid", reject_negative_rows_then_filter, [ingest])
    sink = CollectingSink()
    out = HandlerNode("sink", sink, [mid])
    batch = [("a", 1), ("b", -1), ("c", 2)]  # 3 items, 1 rejected

    async with asyncio.timeout(TIMEOUT):
        async with PipelineExecutor([ingest], [mid, out]) as executor:
            receipt = await (await executor.submit("ingest", batch))

    assert receipt.items[Outcome.DEAD_LETTERED] == 1
    assert receipt.items[Outcome.FILTERED] == 2
    assert receipt.items[Outcome.COMMITTED] == 0
    assert receipt.counts[Outcome.FILTERED] == 1
    assert sink.items == []
    assert executor.metrics()["mid"].filtered == 1


# -- items dropped by list handlers --------------------------------------------------------


def keep_even(batch: list[int]) -> list[int]:
    return [x for x in batch if x % 2 == 0]


def keep_even_failing_on_seven(batch: list[int]) -> list[int]:
    if 7 in batch:
        raise ValueError("seven")
    return keep_even(batch)


def total(batch: list[int]) -> dict[str, int]:
    return {"total": sum(batch)}


async def test_items_a_list_handler_drops_are_counted_as_filtered() -> None:
    receipt, _ = await submit_one(
        *chain(("even", keep_even, {}), ("sink", Sink(), {})), [1, 2, 3, 4, 5]
    )

    assert receipt.items[Outcome.COMMITTED] == 2
    assert receipt.items[Outcome.FILTERED] == 3
    assert sum(receipt.items.values()) == 5
    assert receipt.counts[Outcome.FILTERED] == 0  # items dropped; no message ended there


async def test_dropped_rejected_and_committed_items_add_up_to_what_was_submitted() -> None:
    steps = chain(
        ("odd", reject_odd, {}),
        ("small", lambda b: [x for x in b if x < 6], {}),
        ("sink", Sink(), {}),
    )
    receipt, _ = await submit_one(*steps, list(range(10)))

    assert receipt.items[Outcome.DEAD_LETTERED] == 5  # 1, 3, 5, 7, 9
    assert receipt.items[Outcome.FILTERED] == 2  # 6, 8
    assert receipt.items[Outcome.COMMITTED] == 3  # 0, 2, 4
    assert sum(receipt.items.values()) == 10


async def test_dropped_items_add_up_through_poison_isolation() -> None:
    steps = chain(("even", keep_even_failing_on_seven, {}), ("sink", Sink(), {}))
    receipt, _ = await submit_one(*steps, list(range(10)))

    assert receipt.items[Outcome.DEAD_LETTERED] == 1  # 7, isolated
    assert receipt.items[Outcome.COMMITTED] == 5  # 0, 2, 4, 6, 8
    assert receipt.items[Outcome.FILTERED] == 4  # 1, 3, 5, 9
    assert sum(receipt.items.values()) == 10


async def test_an_aggregation_of_a_list_into_one_record_drops_nothing() -> None:
    receipt, _ = await submit_one(*chain(("total", total, {}), ("sink", Sink(), {})), [1, 2, 3])

    assert receipt.items[Outcome.COMMITTED] == 1
    assert receipt.items[Outcome.FILTERED] == 0
