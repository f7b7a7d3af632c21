"""TimerTrigger: a source that fires every ``interval`` seconds, on the loop's clock.

``TimerTrigger(node, interval, max_runs=None)`` keeps the original's signature and becomes
the source of a producer node::

    HandlerNode("generate", TimerTrigger(generate_transactions, interval=1.0, max_runs=10))

Every ``interval`` seconds it calls ``node`` with a :class:`Tick` and emits what it returns
(see ``_fire`` for the handler shapes); with ``node=None`` it emits the :class:`Tick`
itself, for downstream nodes to act on.

Drift-free: run ``k`` is due at ``start + k * interval`` on the event loop's monotonic
clock, however long the previous run (or the backpressure of a full channel) took. A run
that falls more than an interval behind does not cause a burst: the missed slots are
skipped, counted in ``Tick.missed``, and the next run is due at the next slot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from ._fire import Fired
from ._reject import reject_item

__all__ = ["Tick", "TimerTrigger"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Tick:
    """One firing of a :class:`TimerTrigger`."""

    #: 1 for the first run, 2 for the second, ...
    number: int
    #: When the run was due, on the loop clock (``loop.time()``).
    scheduled: float
    #: When it actually fired, on the loop clock.
    fired_at: float
    #: Wall-clock time (``time.time()``) it fired.
    timestamp: float
    #: Slots skipped just before this run because the trigger was running late.
    missed: int = 0


class TimerTrigger:
    """A source firing ``node`` every ``interval`` seconds, ``max_runs`` times (None:
    until the pipeline stops). The first run is due one interval after the source
    starts, or at once with ``immediate=True``. Each ``async for`` starts a new schedule.
    """

    def __init__(
        self,
        node: Any = None,
        interval: float = 1.0,
        max_runs: int | None = None,
        *,
        immediate: bool = False,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"TimerTrigger: interval must be > 0 seconds, got {interval!r}")
        if max_runs is not None and (not isinstance(max_runs, int) or max_runs < 0):
            raise ValueError(f"TimerTrigger: max_runs must be None or >= 0, got {max_runs!r}")
        self.fired = Fired(node, "TimerTrigger")
        self.interval = float(interval)
        self.max_runs = max_runs
        self.immediate = immediate

    def __repr__(self) -> str:
        return f"<TimerTrigger every {self.interval}s max_runs={self.max_runs}>"

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._run()

    async def _run(self) -> AsyncGenerator[Any, None]:
        loop = asyncio.get_running_loop()
        await self.fired.setup()
        try:
            start = loop.time()
            slot = 0 if self.immediate else 1
            runs = 0
            while self.max_runs is None or runs < self.max_runs:
                due = start + slot * self.interval
                await _sleep_until(loop, due)
                now = loop.time()
                missed = int((now - due) // self.interval)
                if missed > 0:
                    logger.info("TimerTrigger: %d run(s) skipped, running late", missed)
                    slot += missed
                    due = start + slot * self.interval
                runs += 1
                tick = Tick(runs, due, now, time.time(), max(missed, 0))
                try:
                    outputs = self.fired.outputs(tick)
                    async with aclosing(outputs):
                        async for message in outputs:
                            yield message
                except Exception as exc:
                    logger.warning("TimerTrigger: run %d failed: %r", runs, exc, exc_info=True)
                    reject_item(tick, f"TimerTrigger run {runs}: {type(exc).__name__}: {exc}")
                slot += 1
        finally:
            await self.fired.teardown()


async def _sleep_until(loop: asyncio.AbstractEventLoop, when: float) -> None:
    """Sleep until the loop clock reads ``when`` (an absolute deadline: no drift)."""
    if when <= loop.time():
        return
    future: asyncio.Future[None] = loop.create_future()
    handle = loop.call_at(when, _wake, future)
    try:
        await future
    finally:
        handle.cancel()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
