"""Feeding a source node (``_source``): stopping while it waits on a full channel, source
functions that fail, sources that reject then raise."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pipelines import TIMEOUT

from asyncpipe import HandlerNode, PipelineExecutor, reject
from asyncpipe.testing import CollectingSink, run_pipeline


async def test_stop_while_source_is_blocked_delivers_its_item_to_every_dependent() -> None:
    yielded: list[int] = []
    pulled_third = asyncio.Event()
    gate = asyncio.Event()
    b_holding = asyncio.Event()
    a_out: list[int] = []
    b_out: list[int] = []

    async def files() -> AsyncIterator[int]:  # once yielded, an item counts as consumed
        for i in range(1000):
            yielded.append(i)
            if i == 2:
                pulled_third.set()
            yield i

    async def slow_b(message: int) -> None:
        b_holding.set()
        await gate.wait()
        b_out.append(message)

    source = HandlerNode("source", files)
    a = HandlerNode("a", a_out.append, [source], capacity=100)
    b = HandlerNode("b", slow_b, [source], capacity=1)
    executor = PipelineExecutor([source], [a, b])
    run = asyncio.create_task(executor.run())
    async with asyncio.timeout(TIMEOUT):
        # b holds item 0 and its channel holds item 1: the source is stuck putting item 2.
        await b_holding.wait()
        await pulled_third.wait()
        executor.stop()
        for _ in range(20):  # loop turns enough for the executor to act on stop()
            await asyncio.sleep(0)
        gate.set()
        await run

    assert yielded == [0, 1, 2]
    assert a_out == yielded
    assert b_out == yielded


def rows_from_db() -> Any:
    """A source given as a function of no arguments; the database is down."""
    raise ConnectionError("db unreachable")


def not_iterable() -> Any:
    return 42


@pytest.mark.parametrize(
    ("factory", "error_type"),
    [(rows_from_db, "ConnectionError"), (not_iterable, "TypeError")],
    ids=["raises", "returns-non-iterable"],
)
async def test_failing_source_function_becomes_a_dead_letter_of_its_node(
    factory: Callable[[], Any], error_type: str
) -> None:
    sink = CollectingSink()
    source = HandlerNode("clients", factory)
    out = HandlerNode("sink", sink, [source])

    executor = await run_pipeline([source], [out], timeout=TIMEOUT)

    assert [(d.node, d.error_type) for d in executor.dead_letters] == [("clients", error_type)]
    assert sink.items == []
    assert executor.state == "closed"


async def lines_then_truncated() -> AsyncIterator[str]:
    yield "ok-1"
    reject("garbage line", "malformed")
    raise OSError("file truncated")
    yield "never"  # pragma: no cover


async def test_source_that_rejects_then_raises_dead_letters_both() -> None:
    sink = CollectingSink()
    source = HandlerNode("lines", lines_then_truncated)
    out = HandlerNode("sink", sink, [source])

    executor = await run_pipeline([source], [out], timeout=TIMEOUT)

    assert sink.items == ["ok-1"]
    assert [(d.node, d.error_type, d.payload) for d in executor.dead_letters] == [
        ("lines", "Rejected", "garbage line"),
        ("lines", "OSError", None),
    ]
