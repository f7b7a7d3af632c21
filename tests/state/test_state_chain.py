"""Two stateful nodes in a row: what the first sends again after a crash (its outbox) is
recognised by the second, which applied it already."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pipelines import TIMEOUT

from asyncpipe import HandlerNode, PipelineAborted, PipelineExecutor
from asyncpipe.state import KeyedHandler, MemoryStateStore, StateStore
from asyncpipe.testing import CollectingSink


class Running(KeyedHandler):
    """Per key: the running sum of ``v``, emitted once per message and key."""

    def update(self, key: Any, state: Any, records: list[Any]) -> tuple[Any, list[Any]]:
        total = (state or 0) + sum(r["v"] for r in records)
        return total, [{"k": key, "v": total}]


def chain(store: StateStore, sink: Any) -> PipelineExecutor:
    ingest = HandlerNode("ingest")
    first = HandlerNode("first", Running(), [ingest], key=lambda r: r["k"])
    second = HandlerNode("second", Running(), [first], key=lambda r: "all")
    out = HandlerNode("sink", sink, [second])
    return PipelineExecutor([ingest], [first, second, out], state_store=store)


async def test_outputs_sent_again_by_a_stateful_node_are_not_applied_twice_downstream() -> None:
    store = MemoryStateStore(persistent=True)
    arrived = asyncio.Event()

    async def stuck(message: Any) -> None:  # a sink that never commits
        arrived.set()
        await asyncio.Event().wait()

    first_run = chain(store, stuck)
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(PipelineAborted):
            async with first_run:
                receipt = await first_run.submit("ingest", [{"k": "a", "v": 5}], origin="b1")
                await arrived.wait()  # both nodes committed; nothing delivered to the end
                first_run.abort()  # the crash
                await receipt
    sink = CollectingSink()
    second_run = chain(store, sink)
    async with asyncio.timeout(TIMEOUT):
        async with second_run:
            await (await second_run.submit("ingest", [{"k": "a", "v": 1}], origin="b2"))
    # "first" sends its outputs of b1 again at start: "second" recognises them (it applied
    # them before the crash) and sends its own outbox instead. b2 counts once: 5 + 5 + 1
    # would mean b1 was counted twice downstream.
    assert sink.items == [[{"k": "all", "v": 5}], [{"k": "all", "v": 11}]]


async def test_the_outbox_keeps_every_output_after_the_first_one_not_delivered() -> None:
    store = MemoryStateStore(persistent=True)
    gate = asyncio.Event()
    arrived = asyncio.Event()

    async def slow_for_a(message: Any) -> None:  # commits b1's output (key a) last
        if message[0]["k"] == "a":
            arrived.set()
            await gate.wait()

    ingest = HandlerNode("ingest")
    node = HandlerNode("state", Running(), [ingest], key=lambda r: r["k"])
    out = HandlerNode("sink", slow_for_a, [node], workers=2, ordered=False)
    executor = PipelineExecutor([ingest], [node, out], state_store=store)
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(PipelineAborted):
            async with executor:
                first = await executor.submit("ingest", [{"k": "a", "v": 1}], origin="b1")
                await arrived.wait()
                await (await executor.submit("ingest", [{"k": "b", "v": 2}], origin="b2"))
                # b2 is delivered, b1 is not: a third message commits what is delivered.
                await (await executor.submit("ingest", [{"k": "b", "v": 3}], origin="b3"))
                executor.abort()  # the crash
                await first
    # b2 was delivered but b1 before it was not: both stay in the outbox, in their order,
    # so sending it again replays b1's outputs then b2's, as the first run did.
    pending = await store.undelivered("state")
    assert [name.split("\x1f")[0] for name, _ in pending][:2] == ["b1", "b2"]


async def test_two_stateful_nodes_feeding_a_third_are_told_apart() -> None:
    # One message reaches "left" and "right" (both stateful, one lane each); each sends
    # its outputs on to "both". Their relays derive from the same message: named after it
    # alone, "both" would take right's outputs for a replay of left's and drop them.
    sink = CollectingSink()
    ingest = HandlerNode("ingest")
    left = HandlerNode("left", Running(), [ingest], key=lambda r: r["k"])
    right = HandlerNode("right", Running(), [ingest], key=lambda r: r["k"])
    both = HandlerNode("both", Running(), [left, right], key=lambda r: "all")
    out = HandlerNode("sink", sink, [both])
    executor = PipelineExecutor(
        [ingest], [left, right, both, out], state_store=MemoryStateStore(persistent=True)
    )
    async with asyncio.timeout(TIMEOUT):
        async with executor:
            receipt = await executor.submit("ingest", [{"k": "a", "v": 2}], origin="b1")
            await receipt
    assert sorted(m[0]["v"] for m in sink.items) == [2, 4]
