"""Handlers: every shape a node's handler or source may take, and the node options."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from asyncpipe import BaseHandler, HandlerNode, PipelineExecutor, reject
from asyncpipe.testing import CollectingSink, list_source, run_handler, run_pipeline


async def yield_a_few_times(turns: int) -> None:
    """Give up the loop ``turns`` times: a deterministic stand-in for uneven work."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def collect_source(source: Any) -> list[Any]:
    """Run source -> CollectingSink and return what the sink received."""
    sink = CollectingSink()
    src = HandlerNode("src", source)
    out = HandlerNode("sink", sink, [src])
    await run_pipeline([src], [out], timeout=10)
    return sink.items


class ConcurrencyProbe(BaseHandler):
    """Echoes messages, taking several loop turns each, and records peak concurrency."""

    def __init__(self, turns: int = 10) -> None:
        self.turns = turns
        self.active = 0
        self.peak = 0
        self.calls = 0

    async def handle(self, data: Any) -> Any:
        self.calls += 1
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await yield_a_few_times(self.turns)
        finally:
            self.active -= 1
        return data


# -- handler shapes ------------------------------------------------------------------------


async def test_base_handler_with_async_handle() -> None:
    class Double(BaseHandler):
        async def handle(self, data: list[int]) -> list[int]:
            return [x * 2 for x in data]

    run = await run_handler(Double(), [[1, 2], [3]], timeout=10)
    assert run.outputs == [[2, 4], [6]]
    assert run.dead_letters == []


async def test_base_handler_with_sync_handle() -> None:
    class Double(BaseHandler):
        def handle(self, data: list[int]) -> list[int]:
            return [x * 2 for x in data]

    run = await run_handler(Double(), [[1, 2], [3]], timeout=10)
    assert run.outputs == [[2, 4], [6]]


async def test_plain_sync_function() -> None:
    def increment(x: int) -> int:
        return x + 1

    run = await run_handler(increment, [1, 2, 3], timeout=10)
    assert run.outputs == [2, 3, 4]


async def test_plain_async_function() -> None:
    async def increment(x: int) -> int:
        await asyncio.sleep(0)
        return x + 1

    run = await run_handler(increment, [1, 2, 3], timeout=10)
    assert run.outputs == [2, 3, 4]


async def test_function_taking_star_args_is_a_handler_not_a_source() -> None:
    # Like `print`, which the package docstring uses as a sink.
    seen: list[Any] = []

    def record(*args: Any) -> None:
        seen.extend(args)

    src = HandlerNode("src", [1, 2])
    out = HandlerNode("collect", record, dependencies=[src])
    await run_pipeline([src], [out], timeout=10)
    assert seen == [1, 2]


async def test_async_generator_emits_every_value_it_yields() -> None:
    async def explode(batch: list[int]) -> AsyncIterator[int]:
        for x in batch:
            await asyncio.sleep(0)
            yield x

    run = await run_handler(explode, [[1, 2, 3], [4]], timeout=10)
    assert run.outputs == [1, 2, 3, 4]


async def test_sync_generator_emits_every_value_it_yields() -> None:
    def explode(batch: list[int]) -> Iterator[int]:
        yield from batch

    run = await run_handler(explode, [[1, 2, 3], [4]], timeout=10)
    assert run.outputs == [1, 2, 3, 4]


async def test_returning_none_filters_the_message() -> None:
    def evens(x: int) -> int | None:
        return x if x % 2 == 0 else None

    run = await run_handler(evens, range(6), timeout=10)
    assert run.outputs == [0, 2, 4]


# -- sources -------------------------------------------------------------------------------


async def test_list_source_emits_its_items_in_order() -> None:
    assert await collect_source(list_source(["a", "b", "c"])) == ["a", "b", "c"]


async def test_async_generator_function_source() -> None:
    async def numbers() -> AsyncIterator[int]:
        for i in range(3):
            await asyncio.sleep(0)
            yield i

    assert await collect_source(numbers) == [0, 1, 2]


async def test_zero_argument_function_returning_an_iterable_is_a_source() -> None:
    def numbers() -> range:
        return range(4)

    assert await collect_source(numbers) == [0, 1, 2, 3]


async def test_async_iterable_object_source() -> None:
    class Countdown:
        def __aiter__(self) -> AsyncIterator[int]:
            return self._items()

        async def _items(self) -> AsyncIterator[int]:
            for i in (3, 2, 1):
                yield i

    assert await collect_source(Countdown()) == [3, 2, 1]


async def test_identity_node_passes_submitted_messages_on() -> None:
    sink = CollectingSink()
    ingest = HandlerNode("ingest")
    out = HandlerNode("sink", sink, [ingest])
    async with asyncio.timeout(10):
        async with PipelineExecutor([ingest], [out]) as executor:
            receipt = await executor.submit("ingest", {"id": 1})
            await receipt.wait(10)
    assert sink.items == [{"id": 1}]


# -- lifecycle -----------------------------------------------------------------------------


async def test_setup_and_teardown_run_once_around_the_messages() -> None:
    calls: list[str] = []

    class Lifecycle(BaseHandler):
        async def setup(self) -> None:
            calls.append("setup")

        async def teardown(self) -> None:
            calls.append("teardown")

        async def handle(self, data: Any) -> Any:
            calls.append("handle")
            return data

    await run_handler(Lifecycle(), [1, 2, 3], timeout=10)
    assert calls == ["setup", "handle", "handle", "handle", "teardown"]


async def test_setup_and_teardown_run_once_with_several_workers() -> None:
    calls: list[str] = []

    class Lifecycle(BaseHandler):
        def setup(self) -> None:
            calls.append("setup")

        def teardown(self) -> None:
            calls.append("teardown")

        async def handle(self, data: Any) -> Any:
            return data

    await run_handler(Lifecycle(), range(10), workers=4, timeout=10)
    assert calls == ["setup", "teardown"]


async def test_seed_pre_message_and_pos_message_hooks_are_called() -> None:
    calls: list[str] = []

    class Seed(BaseHandler):
        def pre_message(self) -> None:
            calls.append("pre_message")

        def pos_message(self) -> None:
            calls.append("pos_message")

        def handle(self, data: Any) -> Any:
            calls.append("handle")
            return data

    await run_handler(Seed(), [1], timeout=10)
    assert calls == ["pre_message", "handle", "pos_message"]


# -- fan-in / fan-out ----------------------------------------------------------------------


async def test_fan_in_merges_every_item_of_every_dependency() -> None:
    sink = CollectingSink()
    letters = HandlerNode("letters", ["a", "b", "c"])
    digits = HandlerNode("digits", [1, 2, 3])
    merge = HandlerNode("merge", None, [letters, digits])
    out = HandlerNode("sink", sink, [merge])
    await run_pipeline([letters, digits], [merge, out], timeout=10)
    assert sorted(map(str, sink.items)) == ["1", "2", "3", "a", "b", "c"]
    # Each input keeps its own order within the merged stream.
    assert [x for x in sink.items if isinstance(x, str)] == ["a", "b", "c"]
    assert [x for x in sink.items if isinstance(x, int)] == [1, 2, 3]


async def test_fan_out_sends_every_output_to_every_dependent() -> None:
    left, right = CollectingSink(), CollectingSink()
    src = HandlerNode("src", [1, 2, 3])
    double = HandlerNode("double", lambda x: x * 2, [src])
    to_left = HandlerNode("left", left, [double])
    to_right = HandlerNode("right", right, [double])
    await run_pipeline([src], [double, to_left, to_right], timeout=10)
    assert left.items == [2, 4, 6]
    assert right.items == [2, 4, 6]


# -- workers -------------------------------------------------------------------------------


async def test_workers_ordered_preserves_input_order_despite_uneven_work() -> None:
    async def uneven(i: int) -> int:
        await yield_a_few_times((i * 7) % 5)
        return i

    run = await run_handler(uneven, range(20), workers=4, timeout=10)
    assert run.outputs == list(range(20))


async def test_workers_unordered_delivers_every_output() -> None:
    async def uneven(i: int) -> int:
        await yield_a_few_times((i * 7) % 5)
        return i

    run = await run_handler(uneven, range(20), workers=4, ordered=False, timeout=10)
    assert sorted(run.outputs) == list(range(20))
    assert len(run.outputs) == 20


@pytest.mark.parametrize("ordered", [True, False])
async def test_workers_run_that_many_handler_calls_concurrently(ordered: bool) -> None:
    probe = ConcurrencyProbe()
    await run_handler(probe, range(12), workers=3, ordered=ordered, timeout=10)
    assert probe.peak >= 3


@pytest.mark.parametrize("ordered", [True, False])
async def test_workers_caps_concurrent_handler_calls(ordered: bool) -> None:
    probe = ConcurrencyProbe()
    await run_handler(probe, range(12), workers=3, ordered=ordered, timeout=10)
    assert probe.peak <= 3


# -- parallel chunks -----------------------------------------------------------------------


async def test_parallel_chunks_are_reassembled_in_order() -> None:
    async def square(chunk: list[int]) -> list[int]:
        # Later chunks finish first.
        await yield_a_few_times(10 - chunk[0])
        return [x * x for x in chunk]

    run = await run_handler(square, [list(range(10))], parallel=True, chunks=4, timeout=10)
    assert run.outputs == [[x * x for x in range(10)]]


async def test_parallel_calls_the_handler_once_per_chunk_concurrently() -> None:
    probe = ConcurrencyProbe(turns=3)
    run = await run_handler(probe, [list(range(8))], parallel=True, chunks=4, timeout=10)
    assert probe.calls == 4
    assert probe.peak == 4
    assert run.outputs == [list(range(8))]


async def test_parallel_on_a_non_list_message_is_dead_lettered_with_a_type_error() -> None:
    run = await run_handler(lambda chunk: chunk, [42, [1, 2]], parallel=True, timeout=10)
    assert run.outputs == [[1, 2]]
    [letter] = run.dead_letters
    assert letter.error_type == "TypeError"
    assert "parallel=True" in letter.error_message
    assert "int" in letter.error_message
    assert letter.payload == 42


# -- reject --------------------------------------------------------------------------------


def keep_non_negative(batch: list[int]) -> list[int]:
    kept = []
    for i, x in enumerate(batch):
        if x < 0:
            reject(x, "negative", index=i)
        else:
            kept.append(x)
    return kept


async def test_reject_dead_letters_only_that_item() -> None:
    run = await run_handler(keep_non_negative, [[1, -2, 3]], timeout=10)
    assert run.outputs == [[1, 3]]
    [letter] = run.dead_letters
    assert (letter.payload, letter.error_message, letter.index) == (-2, "negative", 1)
    assert letter.node == "handler"


async def test_reject_index_is_adjusted_across_parallel_chunks() -> None:
    batch = [0, -1, 2, 3, -4, 5, 6, -7]
    run = await run_handler(keep_non_negative, [batch], parallel=True, chunks=4, timeout=10)
    assert run.outputs == [[0, 2, 3, 5, 6]]
    indexes = sorted((letter.index, letter.payload) for letter in run.dead_letters)
    assert indexes == [(1, -1), (4, -4), (7, -7)]


def test_reject_outside_a_handler_raises_runtime_error() -> None:
    with pytest.raises(RuntimeError, match="outside a handler"):
        reject(1, "nope")


class Total(BaseHandler):
    """Sums what it receives; emits the total once its input has ended."""

    def __init__(self) -> None:
        self.total = 0

    async def handle(self, data: int) -> None:
        self.total += data

    async def finish(self) -> int:
        return self.total


async def test_finish_emits_a_last_message_once_the_input_has_ended() -> None:
    sink = CollectingSink()
    src = HandlerNode("numbers", list_source([1, 2, 3, 4]))
    total = HandlerNode("total", Total(), [src], workers=2)
    await run_pipeline([src], [total, HandlerNode("sink", sink, [total])], timeout=10)
    assert sink.items == [10]


async def test_an_async_generator_finish_emits_several_and_a_failing_one_is_dead_lettered() -> None:
    class Windows(BaseHandler):
        async def handle(self, data: int) -> None:
            return None

        async def finish(self) -> Any:
            yield "first"
            yield "second"

    class Broken(BaseHandler):
        async def handle(self, data: int) -> None:
            return None

        async def finish(self) -> Any:
            raise RuntimeError("cannot flush")

    sink = CollectingSink()
    src = HandlerNode("numbers", list_source([1]))
    windows = HandlerNode("windows", Windows(), [src])
    broken = HandlerNode("broken", Broken(), [src])
    executor = await run_pipeline(
        [src], [windows, broken, HandlerNode("sink", sink, [windows, broken])], timeout=10
    )
    assert sink.items == ["first", "second"]
    [letter] = executor.dead_letters
    assert (letter.node, letter.error_message, letter.payload) == ("broken", "cannot flush", None)


async def test_a_plain_generator_finish_emits_each_item() -> None:
    class Pairs(BaseHandler):
        def handle(self, data: int) -> None:
            return None

        def finish(self) -> Any:
            yield from ("a", "b")

    sink = CollectingSink()
    src = HandlerNode("numbers", list_source([1]))
    pairs = HandlerNode("pairs", Pairs(), [src])
    await run_pipeline([src], [pairs, HandlerNode("sink", sink, [pairs])], timeout=10)
    assert sink.items == ["a", "b"]
