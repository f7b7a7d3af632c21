"""Attempts at a message (``_attempt``): a handler's own CancelledError, the rejections
of a failed attempt, the cause kept in a dead letter's traceback, failed chunks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pipelines import TIMEOUT

from asyncpipe import HandlerNode, Outcome, PipelineExecutor, reject
from asyncpipe.testing import CollectingSink, run_handler, run_pipeline


async def cancelled_on_three(message: int) -> int:
    """Awaits a future someone else cancelled: a CancelledError the pipeline did not cause."""
    if message == 3:
        future = asyncio.get_running_loop().create_future()
        future.cancel()
        await future
    return message


@pytest.mark.parametrize(
    "options",
    [{}, {"workers": 2}, {"retries": 1, "backoff": 0}],
    ids=["serial", "concurrent", "with-retry"],
)
async def test_handler_raising_cancelled_error_is_dead_lettered_and_run_finishes(
    options: dict[str, Any],
) -> None:
    sink = CollectingSink()
    source = HandlerNode("source", range(10))
    node = HandlerNode("mid", cancelled_on_three, [source], capacity=2, **options)
    out = HandlerNode("sink", sink, [node])

    executor = await run_pipeline([source], [node, out], timeout=TIMEOUT)

    assert sink.items == [i for i in range(10) if i != 3]
    [letter] = executor.dead_letters
    assert (letter.node, letter.error_type, letter.payload) == ("mid", "RuntimeError", 3)
    assert "CancelledError" in (letter.traceback or "")
    assert executor.state == "closed"


def reject_then_fail(batch: Any) -> Any:
    if batch == "bad":
        reject("bad-item", "invalid", index=0)
        raise ValueError("boom")
    return batch


async def test_rejections_of_a_failed_message_are_not_charged_to_the_next_message() -> None:
    ingest = HandlerNode("ingest")
    check = HandlerNode("check", reject_then_fail, [ingest], retries=1, backoff=0)
    sink = HandlerNode("sink", lambda message: None, [check])

    async with asyncio.timeout(TIMEOUT):
        async with PipelineExecutor([ingest], [check, sink]) as executor:
            bad = await (await executor.submit("ingest", "bad"))
            good = await (await executor.submit("ingest", ["good"]))

    assert [(d.error_type, d.payload) for d in bad.dead_letters] == [("ValueError", "bad")]
    assert good.dead_letters == []
    assert good.counts[Outcome.DEAD_LETTERED] == 0
    assert good.committed == 1
    assert good.items[Outcome.COMMITTED] == 1
    assert [d.error_type for d in executor.dead_letters] == ["ValueError"]


async def parse_prices(chunk: list[int]) -> list[int]:
    record: dict[str, int] = {}
    try:
        record["price"]
    except KeyError as exc:
        raise ValueError("record without price") from exc
    return chunk  # pragma: no cover


@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "whole"])
async def test_dead_letter_traceback_keeps_the_handlers_own_cause(parallel: bool) -> None:
    run = await run_handler(
        parse_prices, [[1, 2, 3, 4]], parallel=parallel, chunks=2, timeout=TIMEOUT
    )

    # Every item fails on its own (poison isolation): each letter keeps the cause.
    assert sorted(d.index for d in run.dead_letters if d.index is not None) == [0, 1, 2, 3]
    for letter in run.dead_letters:
        assert letter.error_type == "ValueError"
        assert letter.traceback is not None
        assert "KeyError" in letter.traceback
        assert "direct cause" in letter.traceback


async def test_a_failed_chunk_leaves_no_cancellation_behind_on_the_node() -> None:
    # After a chunk fails, a handler that raises CancelledError must still be dead-lettered
    # as its own failure, not taken for the node being cancelled (which would lose it).
    async def chunk_handler(chunk: list[str]) -> list[str]:
        await asyncio.sleep(0)
        if "boom" in chunk:
            raise ValueError("boom")
        if "cancel" in chunk:
            raise asyncio.CancelledError
        return chunk

    run = await run_handler(
        chunk_handler, [["boom", "x"], ["cancel", "x"], ["a", "b"]], parallel=True, chunks=2
    )

    # Poison isolation lets each message's good item through.
    assert run.outputs == [["x"], ["x"], ["a", "b"]]
    assert [(d.error_type, d.payload) for d in run.dead_letters] == [
        ("ValueError", "boom"),
        ("RuntimeError", "cancel"),
    ]
