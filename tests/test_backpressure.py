"""Bounded channels: slow consumers hold producers back; order and delivery under workers."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from pipelines import TIMEOUT, let_others_run, submit_once_open

from asyncpipe import HandlerNode, PipelineAborted, PipelineExecutor
from asyncpipe.testing import CollectingSink


class Gated:
    """A handler that takes one permit per message; the test hands out permits."""

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.arrived = asyncio.Event()
        self.permits = asyncio.Semaphore(0)
        self.open = False

    async def __call__(self, message: Any) -> None:
        self.started.append(message)
        self.arrived.set()
        if not self.open:
            await self.permits.acquire()

    def open_all(self) -> None:
        self.open = True
        self.permits.release()


async def test_slow_consumer_keeps_the_producer_within_the_channel_capacity() -> None:
    capacity = 4
    produced = 0

    def numbers() -> Iterator[int]:
        nonlocal produced
        i = 0
        while True:
            produced += 1
            yield i
            i += 1

    gate = Gated()
    source = HandlerNode("numbers", numbers)
    sink = HandlerNode("slow", gate, [source], capacity=capacity)
    executor = PipelineExecutor([source], [sink])
    run = asyncio.create_task(executor.run())

    ahead = []
    async with asyncio.timeout(TIMEOUT):
        for _ in range(10):
            await gate.arrived.wait()
            gate.arrived.clear()
            await let_others_run()
            # consumed: the messages the sink has taken (one of them still in its handler);
            # the source may be ahead by a full channel plus the one it is trying to put.
            ahead.append(produced - len(gate.started))
            gate.permits.release()
        metrics = executor.metrics()
        executor.stop()
        gate.open_all()
        await run

    assert max(ahead) <= capacity + 1
    assert min(ahead) >= capacity  # the producer did run ahead as far as it was allowed
    assert metrics["slow"].queue_high_water == capacity
    assert metrics["slow"].queue_depth == capacity


async def test_submit_waits_while_the_ingress_channel_is_full() -> None:
    gate = Gated()
    node = HandlerNode("slow", gate, capacity=1)
    executor = PipelineExecutor([node])
    run = asyncio.create_task(executor.run())
    first = await submit_once_open(executor, "slow", 1)
    async with asyncio.timeout(TIMEOUT):
        await gate.arrived.wait()  # 1 is in the handler; the channel is empty
    second = await executor.submit("slow", 2)  # fills the channel

    third = asyncio.create_task(executor.submit("slow", 3))
    await let_others_run()
    assert not third.done()
    assert executor.metrics()["slow"].queue_depth == 1

    gate.permits.release()  # 1 finishes, the handler takes 2: room for 3
    async with asyncio.timeout(TIMEOUT):
        receipt = await third
        gate.open_all()
        await asyncio.gather(first.wait(), second.wait(), receipt.wait())
        executor.stop()
        await run
    assert gate.started == [1, 2, 3]


async def test_cancelled_submit_enqueues_nothing() -> None:
    gate = Gated()
    node = HandlerNode("slow", gate, capacity=1)
    executor = PipelineExecutor([node])
    run = asyncio.create_task(executor.run())
    first = await submit_once_open(executor, "slow", 1)
    async with asyncio.timeout(TIMEOUT):
        await gate.arrived.wait()
    second = await executor.submit("slow", 2)
    blocked = asyncio.create_task(executor.submit("slow", 3))
    await let_others_run()
    assert not blocked.done()

    blocked.cancel()
    await asyncio.gather(blocked, return_exceptions=True)
    assert blocked.cancelled()
    gate.open_all()
    async with asyncio.timeout(TIMEOUT):
        await asyncio.gather(first.wait(), second.wait())
        executor.stop()
        await run

    assert gate.started == [1, 2]
    assert executor.metrics()["slow"].received == 2


async def test_memory_stays_flat_over_100k_messages_through_three_stages() -> None:
    # Tracing every allocation slows a run several-fold, so memory is traced over the last
    # quarter of the messages, once the pipeline is warm: a leak or an unbounded buffer
    # grows with the messages sent, so 25k of them at 50 bytes each is the bound (the same
    # rate as 5 MB for 100k).
    n, traced_from = 100_000, 75_000
    count = 0
    # Debug mode (tests/conftest.py) records a traceback for every callback scheduled:
    # several times slower (30 s timeouts on a loaded machine), and memory the pipeline
    # does not use. This test measures the pipeline's memory, so it runs without it.
    asyncio.get_running_loop().set_debug(False)

    def numbers() -> Iterator[int]:  # a generator: the messages never exist all at once
        for i in range(n):
            if i == traced_from:
                tracemalloc.start()
            yield i

    def increment(x: int) -> int:
        return x + 1

    def tally(x: int) -> None:
        nonlocal count
        count += 1

    source = HandlerNode("numbers", numbers)
    first = HandlerNode("first", increment, [source], capacity=16)
    second = HandlerNode("second", increment, [first], capacity=16)
    sink = HandlerNode("tally", tally, [second], capacity=16)
    executor = PipelineExecutor([source], [first, second, sink])

    try:
        async with asyncio.timeout(30):
            await executor.run()
        assert tracemalloc.is_tracing()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert count == n
    assert peak < (n - traced_from) * 50, f"traced peak {peak / 2**20:.2f} MiB"
    for name in ("first", "second", "tally"):
        assert executor.metrics()[name].queue_high_water <= 16


async def scrambled(x: int, completed: list[int]) -> int:
    for _ in range((x * 7919) % 7):  # a varying number of turns: completions out of order
        await asyncio.sleep(0)
    completed.append(x)
    return x


async def test_ordered_workers_emit_in_input_order_despite_scrambled_completion() -> None:
    completed: list[int] = []
    sink = CollectingSink()
    source = HandlerNode("numbers", range(1000))
    work = HandlerNode("work", lambda x: scrambled(x, completed), [source], workers=4)
    out = HandlerNode("out", sink, [work])

    async with asyncio.timeout(TIMEOUT):
        await PipelineExecutor([source], [work, out]).run()

    assert completed != sorted(completed)  # the handlers really finished out of order
    assert sink.items == list(range(1000))


async def test_unordered_workers_deliver_every_message_exactly_once() -> None:
    completed: list[int] = []
    sink = CollectingSink()
    source = HandlerNode("numbers", range(1000))
    work = HandlerNode(
        "work", lambda x: scrambled(x, completed), [source], workers=4, ordered=False
    )
    out = HandlerNode("out", sink, [work])

    async with asyncio.timeout(TIMEOUT):
        await PipelineExecutor([source], [work, out]).run()

    assert len(sink.items) == 1000
    assert sorted(sink.items) == list(range(1000))


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
async def test_a_generator_expanding_one_message_is_held_back_by_a_slow_consumer(
    ordered: bool,
) -> None:
    produced = 0

    def expand(n: int) -> Iterator[int]:
        nonlocal produced
        for i in range(n):
            produced += 1
            yield i

    gate = Gated()
    source = HandlerNode("source", [1_000_000, 1_000_000])
    work = HandlerNode("expand", expand, [source], workers=2, ordered=ordered, capacity=4)
    out = HandlerNode("out", gate, [work], capacity=4)
    executor = PipelineExecutor([source], [work, out])
    run = asyncio.create_task(executor.run())
    await asyncio.wait_for(gate.arrived.wait(), TIMEOUT)
    await let_others_run()

    # Two messages in flight, each buffering at most its own channel's capacity (ordered)
    # beside the consumer's channel and the item being handed over.
    assert produced <= 2 * (4 + 1) + 4 + 2
    executor.abort()
    with pytest.raises(PipelineAborted):
        await asyncio.wait_for(run, TIMEOUT)
