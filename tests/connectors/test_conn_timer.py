"""TimerTrigger: fires the right number of times, on a drift-free schedule."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from conn_helpers import TIMEOUT, collect

from asyncpipe import BaseHandler, HandlerNode, PipelineExecutor
from asyncpipe.connectors import Tick, TimerTrigger
from asyncpipe.testing import CollectingSink

INTERVAL = 0.02


async def test_fires_max_runs_times_on_a_fixed_grid() -> None:
    started = asyncio.get_running_loop().time()
    ticks, _ = await collect(TimerTrigger(None, INTERVAL, max_runs=5))
    assert [t.number for t in ticks] == [1, 2, 3, 4, 5]
    assert all(isinstance(t, Tick) for t in ticks)
    first = ticks[0].scheduled
    assert first - started == pytest.approx(INTERVAL, abs=0.01)
    # Each run is due exactly one interval after the previous one: no drift.
    for k, tick in enumerate(ticks):
        assert tick.scheduled == pytest.approx(first + k * INTERVAL, abs=1e-9)
        assert tick.fired_at >= tick.scheduled - 1e-3
    assert all(t.missed == 0 for t in ticks)


async def test_slow_runs_do_not_shift_the_schedule_or_cause_a_burst() -> None:
    seen: list[Tick] = []

    async def slow(tick: Tick) -> int:
        seen.append(tick)
        if tick.number == 2:
            await asyncio.sleep(INTERVAL * 2.5)  # this run takes longer than the interval
        return tick.number

    messages, _ = await collect(TimerTrigger(slow, INTERVAL, max_runs=4))
    assert messages == [1, 2, 3, 4]
    first = seen[0].scheduled
    slots = [(t.scheduled - first) / INTERVAL for t in seen]
    assert slots == pytest.approx([round(s) for s in slots], abs=1e-6)  # on the grid
    assert slots[:2] == pytest.approx([0, 1])
    assert round(slots[2]) >= 3 and seen[2].missed >= 1  # the missed slots were skipped ...
    assert slots[3] == pytest.approx(slots[2] + 1)  # ... with no burst to catch up


async def test_what_the_handler_returns_is_emitted() -> None:
    def numbers(tick: Tick) -> Iterator[int]:
        yield from range(tick.number)

    messages, _ = await collect(TimerTrigger(numbers, INTERVAL, max_runs=3, immediate=True))
    assert messages == [0, 0, 1, 0, 1, 2]

    def no_argument() -> list[str]:
        return ["record"]

    messages, _ = await collect(TimerTrigger(no_argument, INTERVAL, max_runs=2))
    assert messages == [["record"], ["record"]]
    messages, _ = await collect(TimerTrigger(lambda tick: None, INTERVAL, max_runs=2))
    assert messages == []


async def test_a_failing_run_is_a_dead_letter_and_the_timer_goes_on() -> None:
    def flaky(tick: Tick) -> int:
        if tick.number == 2:
            raise RuntimeError("boom")
        return tick.number

    messages, executor = await collect(TimerTrigger(flaky, INTERVAL, max_runs=3))
    assert messages == [1, 3]
    [letter] = executor.dead_letters
    assert letter.node == "source"
    assert letter.error_message == "TimerTrigger run 2: RuntimeError: boom"
    assert isinstance(letter.payload, Tick) and letter.payload.number == 2


async def test_a_handler_object_is_set_up_and_torn_down() -> None:
    class Generate(BaseHandler):
        def __init__(self) -> None:
            self.events: list[str] = []

        async def setup(self) -> None:
            self.events.append("setup")

        async def teardown(self) -> None:
            self.events.append("teardown")

        async def handle(self, tick: Tick) -> dict[str, Any]:
            self.events.append(f"run {tick.number}")
            return {"n": tick.number}

    handler = Generate()
    messages, _ = await collect(TimerTrigger(handler, INTERVAL, max_runs=2))
    assert messages == [{"n": 1}, {"n": 2}]
    assert handler.events == ["setup", "run 1", "run 2", "teardown"]


async def test_without_max_runs_it_fires_until_the_pipeline_stops() -> None:
    sink = CollectingSink()
    source = HandlerNode("timer", TimerTrigger(None, INTERVAL))
    out = HandlerNode("out", sink, [source])
    async with asyncio.timeout(TIMEOUT):
        async with PipelineExecutor([source], [out]) as executor:
            await sink.wait_for(3)
            executor.stop()
    assert [t.number for t in sink.items][:3] == [1, 2, 3]


def test_timer_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="interval"):
        TimerTrigger(None, 0)
    with pytest.raises(ValueError, match="max_runs"):
        TimerTrigger(None, 1, max_runs=-1)
    with pytest.raises(TypeError, match="not a HandlerNode"):
        TimerTrigger(HandlerNode("n", print), 1)


async def test_the_first_tick_is_one_interval_in_unless_immediate() -> None:
    loop = asyncio.get_running_loop()
    for immediate, due in ((True, 0.0), (False, 0.05)):
        start = loop.time()
        ticks = [t async for t in TimerTrigger(None, 0.05, max_runs=1, immediate=immediate)]
        assert ticks[0].scheduled - start == pytest.approx(due, abs=0.01)
