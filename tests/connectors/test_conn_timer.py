"""TimerTrigger: fires the right number of times, on a drift-free schedule.

The async tests run on a virtual clock (``virtual_clock.py``): loop time stands still
while anything is ready and jumps to the next timer, so the schedule is asserted exactly
and machine load cannot shift it. ``INTERVAL`` is a whole number of seconds of loop time
(no real time passes), which keeps every due time exact in floating point.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from conn_helpers import TIMEOUT, collect
from virtual_clock import on_virtual_clock

from asyncpipe import BaseHandler, HandlerNode, PipelineExecutor
from asyncpipe.connectors import Tick, TimerTrigger
from asyncpipe.testing import CollectingSink

INTERVAL = 1.0


@on_virtual_clock
async def test_fires_max_runs_times_on_a_fixed_grid() -> None:
    started = asyncio.get_running_loop().time()
    ticks, _ = await collect(TimerTrigger(None, INTERVAL, max_runs=5))
    assert all(isinstance(t, Tick) for t in ticks)
    assert [t.number for t in ticks] == [1, 2, 3, 4, 5]
    # Run k is due k intervals after the start, and fires right then: no drift.
    assert [t.scheduled - started for t in ticks] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert [t.fired_at for t in ticks] == [t.scheduled for t in ticks]
    assert [t.missed for t in ticks] == [0, 0, 0, 0, 0]


@on_virtual_clock
async def test_slow_runs_do_not_shift_the_schedule_or_cause_a_burst() -> None:
    started = asyncio.get_running_loop().time()
    seen: list[Tick] = []

    async def slow(tick: Tick) -> int:
        seen.append(tick)
        if tick.number == 2:
            await asyncio.sleep(INTERVAL * 2.5)  # this run takes longer than the interval
        return tick.number

    messages, _ = await collect(TimerTrigger(slow, INTERVAL, max_runs=4))
    assert messages == [1, 2, 3, 4]
    # Run 2 (due at 2) ends at 4.5: slot 3 is skipped and counted, run 3 takes slot 4
    # at once (late, still on the grid) ...
    assert [t.scheduled - started for t in seen] == [1.0, 2.0, 4.0, 5.0]
    assert [t.fired_at - started for t in seen] == [1.0, 2.0, 4.5, 5.0]
    assert [t.missed for t in seen] == [0, 0, 1, 0]
    # ... and run 4 waits for its own slot: no burst to catch up.


@on_virtual_clock
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


@on_virtual_clock
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


@on_virtual_clock
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


@on_virtual_clock
async def test_without_max_runs_it_fires_until_the_pipeline_stops() -> None:
    started = asyncio.get_running_loop().time()
    sink = CollectingSink()
    source = HandlerNode("timer", TimerTrigger(None, INTERVAL))
    out = HandlerNode("out", sink, [source])
    async with asyncio.timeout(TIMEOUT):
        async with PipelineExecutor([source], [out]) as executor:
            await sink.wait_for(3)
            executor.stop()
    ticks = sink.items
    assert [t.number for t in ticks] == [1, 2, 3]
    assert [t.scheduled - started for t in ticks] == [1.0, 2.0, 3.0]
    # Stopped at 3 on the loop clock, it did not wait for a fourth slot.
    assert asyncio.get_running_loop().time() - started < 4.0


def test_timer_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="interval"):
        TimerTrigger(None, 0)
    with pytest.raises(ValueError, match="max_runs"):
        TimerTrigger(None, 1, max_runs=-1)
    with pytest.raises(TypeError, match="not a HandlerNode"):
        TimerTrigger(HandlerNode("n", print), 1)


@on_virtual_clock
async def test_the_first_tick_is_one_interval_in_unless_immediate() -> None:
    loop = asyncio.get_running_loop()
    for immediate, due in ((True, 0.0), (False, INTERVAL)):
        start = loop.time()
        ticks = [t async for t in TimerTrigger(None, INTERVAL, max_runs=1, immediate=immediate)]
        assert [t.scheduled - start for t in ticks] == [due]
        assert [t.fired_at - start for t in ticks] == [due]


@on_virtual_clock
async def test_the_virtual_clock_jumps_to_the_next_timer_only_when_idle() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.sleep(0)  # ready work takes no time
    assert loop.time() == start
    await asyncio.sleep(3600.0)  # an hour of loop time, no real time
    assert loop.time() == start + 3600.0
    woken: list[float] = []
    loop.call_later(2.0, lambda: woken.append(loop.time()))
    loop.call_later(1.0, lambda: woken.append(loop.time()))
    await asyncio.sleep(3.0)
    assert woken == [start + 3601.0, start + 3602.0]
