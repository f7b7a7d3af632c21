"""Windows: tumbling, sliding and session, watermark and lateness, reducers, restarts."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import pytest
from pipelines import TIMEOUT
from windows_model import TumblingModel

from asyncpipe import HandlerNode, PipelineExecutor
from asyncpipe.state import (
    JsonCodec,
    Session,
    Sliding,
    StateStore,
    Tumbling,
    Windowed,
    collect,
    count,
    fold,
    maximum,
    mean,
    minimum,
    total,
)
from asyncpipe.testing import CollectingSink

Record = dict[str, Any]


async def run_windows(
    handler: Windowed,
    messages: list[Any],
    *,
    store: StateStore | None = None,
    workers: int = 1,
    origin: str | None = None,
) -> tuple[list[Record], list[Any], PipelineExecutor]:
    """ingest -> windows (key "k") -> sink; returns the window records, dead letters and
    the executor."""
    sink = CollectingSink()
    ingest = HandlerNode("ingest")
    node = HandlerNode("win", handler, [ingest], key="k", workers=workers)
    out = HandlerNode("sink", sink, [node])
    executor = PipelineExecutor([ingest], [node, out], state_store=store)
    async with asyncio.timeout(TIMEOUT):
        async with executor:
            receipts = [
                await executor.submit(
                    "ingest", message, origin=None if origin is None else f"{origin}{i}"
                )
                for i, message in enumerate(messages)
            ]
            for receipt in receipts:
                await receipt
    return [r for message in sink.items for r in message], executor.dead_letters, executor


def tumbling(size: int = 10, lateness: float = 0, **options: Any) -> Windowed:
    return Windowed(
        Tumbling(size),
        {"n": count(), "sum": total("v")},
        event_time="t",
        allowed_lateness=lateness,
        **options,
    )


def as_table(records: list[Record]) -> dict[tuple[Any, Any], tuple[Any, ...]]:
    return {(r["key"], r["start"]): (r["n"], r["sum"]) for r in records}


def rec(k: str, t: float, v: int = 1) -> Record:
    return {"k": k, "t": t, "v": v}


async def test_a_window_closes_for_every_key_when_any_key_advances_time() -> None:
    messages = [[rec("a", 1), rec("b", 2, 5)], [rec("c", 25)]]
    out, _, _ = await run_windows(tumbling(), messages)
    # b's window [0, 10) closed because c's record moved the watermark to 25.
    assert out[:2] == [
        {"key": "a", "start": 0, "end": 10, "n": 1, "sum": 1},
        {"key": "b", "start": 0, "end": 10, "n": 1, "sum": 5},
    ]
    assert out[2] == {"key": "c", "start": 20, "end": 30, "n": 1, "sum": 1}  # at the end


@pytest.mark.parametrize("batch", [1, 7, 1000])
async def test_results_depend_on_the_records_and_their_order_not_the_batches(batch: int) -> None:
    rng = random.Random(7)
    records = [
        rec(f"k{rng.randrange(5)}", i + rng.uniform(-15, 0), rng.randrange(9)) for i in range(300)
    ]
    model = TumblingModel(size=10, lateness=3)
    for record in records:
        model.feed([record])  # record by record: no batching at all
    messages = [records[i : i + batch] for i in range(0, len(records), batch)]
    out, letters, _ = await run_windows(tumbling(10, 3), messages)
    assert as_table(out) == model.all_windows()
    assert [letter.payload for letter in letters] == model.late
    assert model.late  # the disorder is larger than the lateness: some are late


async def test_a_late_record_is_dead_lettered_with_how_late_it_is() -> None:
    messages = [[rec("a", 30), rec("a", 18), rec("a", 17)]]
    out, letters, _ = await run_windows(tumbling(10, lateness=10), messages, origin="b")
    # Watermark 20: [10, 20) has closed, so 18 is late by 2 s, 17 by 3 s.
    assert [(dl.payload["t"], dl.error_message, dl.index, dl.origin) for dl in letters] == [
        (18, "late by 2s", 1, "b0"),
        (17, "late by 3s", 2, "b0"),
    ]
    assert as_table(out) == {("a", 30): (1, 1)}


async def test_a_record_within_the_lateness_still_counts() -> None:
    out, letters, _ = await run_windows(tumbling(10, lateness=5), [[rec("a", 12), rec("a", 9)]])
    assert letters == []
    assert as_table(out) == {("a", 0): (1, 1), ("a", 10): (1, 1)}


async def test_sliding_windows_count_a_record_in_each_window_it_falls_in() -> None:
    handler = Windowed(Sliding(10, 5), {"n": count()}, event_time="t")
    out, _, _ = await run_windows(handler, [[rec("a", 7), rec("a", 12)]])
    assert {(r["start"], r["end"]): r["n"] for r in out} == {
        (0, 10): 1,
        (5, 15): 2,
        (10, 20): 1,
    }


async def test_session_windows_merge_when_a_record_bridges_them() -> None:
    handler = Windowed(
        Session(5), {"n": count(), "vs": collect("v")}, event_time="t", allowed_lateness=10
    )
    messages = [[rec("a", 0, 1), rec("a", 8, 2)], [rec("a", 4, 3)], [rec("a", 30, 4)]]
    out, _, _ = await run_windows(handler, messages)
    assert out == [
        {"key": "a", "start": 0, "end": 13, "n": 3, "vs": [1, 2, 3]},
        {"key": "a", "start": 30, "end": 35, "n": 1, "vs": [4]},
    ]


async def test_processing_time_reads_the_clock_once_per_message() -> None:
    now = [100.0]
    handler = Windowed(Tumbling(10), {"n": count()}, clock=lambda: now[0])
    sink = CollectingSink()
    ingest = HandlerNode("ingest")
    node = HandlerNode("win", handler, [ingest], key="k")
    out = HandlerNode("sink", sink, [node])
    async with asyncio.timeout(TIMEOUT):
        async with PipelineExecutor([ingest], [node, out]) as executor:
            await (await executor.submit("ingest", [rec("a", 0), rec("b", 0)]))
            now[0] = 115.0
            await (await executor.submit("ingest", [rec("a", 0)]))
            assert sink.items == [
                [
                    {"key": "a", "start": 100, "end": 110, "n": 1},
                    {"key": "b", "start": 100, "end": 110, "n": 1},
                ]
            ]


async def test_reducers() -> None:
    handler = Windowed(
        Tumbling(10),
        {
            "lo": minimum("v"),
            "hi": maximum("v"),
            "avg": mean("v"),
            "ts": collect("t"),
            "doubled": total(lambda r: 2 * r["v"]),
            "product": fold(1, lambda acc, r: acc * r["v"]),
        },
        event_time="t",
    )
    out, _, _ = await run_windows(handler, [[rec("a", 1, 4), rec("a", 2, 2), rec("a", 3, 3)]])
    assert out == [
        {
            "key": "a",
            "start": 0,
            "end": 10,
            "lo": 2,
            "hi": 4,
            "avg": 3.0,
            "ts": [1, 2, 3],
            "doubled": 18,
            "product": 24,
        }
    ]


def test_windows_refuse_what_they_cannot_do() -> None:
    with pytest.raises(ValueError, match="merge="):
        Windowed(Session(3), {"f": fold(0, lambda a, r: a)})
    with pytest.raises(ValueError, match="size must be > 0"):
        Tumbling(0)
    with pytest.raises(TypeError, match="reducer"):
        Windowed(Tumbling(3), {"n": len})  # type: ignore[dict-item]


@pytest.mark.parametrize("codec", [None, JsonCodec()])
@pytest.mark.parametrize("workers", [1, 2])
async def test_a_window_spanning_a_restart_counts_both_halves(
    persistent_store: Callable[..., StateStore], codec: Any, workers: int
) -> None:
    rng = random.Random(3)
    records = [
        rec(f"k{rng.randrange(6)}", i + rng.uniform(-4, 0), rng.randrange(9)) for i in range(200)
    ]
    messages = [records[i : i + 9] for i in range(0, len(records), 9)]
    first, second = messages[:11], messages[11:]
    out1, late1, _ = await run_windows(
        tumbling(10, 2, codec=codec),
        first,
        store=persistent_store(),
        workers=workers,
        origin="x",
    )
    out2, late2, _ = await run_windows(
        tumbling(10, 2, codec=codec),
        second,
        store=persistent_store(),
        workers=workers,
        origin="y",
    )
    whole, late, _ = await run_windows(tumbling(10, 2), messages, workers=workers)
    table = as_table(out1)
    table.update(as_table(out2))  # a sink upserts: the second run's windows win
    assert table == as_table(whole)
    assert [dl.payload for dl in late1 + late2] == [dl.payload for dl in late]
