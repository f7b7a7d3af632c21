"""A virtual clock for tests that schedule on the event loop's time (after aiostream's
``test_utils.py``): the test controls time, so machine load cannot move it.

:class:`VirtualClockLoop` is a selector event loop whose ``time()`` stands still while
anything is ready to run and, when the loop would otherwise wait for its next timer,
jumps straight to it. Callbacks, task steps and channel hand-offs take no time at all;
``asyncio.sleep(2.5)`` takes exactly 2.5 seconds of loop time and no real time.

Real I/O still works: the selector is polled first and the clock only jumps when nothing
is ready. Work done off the loop (threads, processes) does not hold the clock back, so
this is for tests whose waiting is all on the loop's own timers.
"""

from __future__ import annotations

import asyncio
import functools
import selectors
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["VirtualClockLoop", "on_virtual_clock"]


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0


class _JumpingSelector(selectors.DefaultSelector):
    """Polls for I/O without blocking; where the loop would have slept until its next
    timer (``timeout`` seconds), moves the clock forward by that much instead."""

    def __init__(self, clock: _Clock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None or timeout <= 0:
            # No timer pending (wait for real I/O: a thread finishing, a signal), or
            # something is ready already: the clock has no reason to move.
            return super().select(timeout)
        events = super().select(0)
        if not events:
            self._clock.now += timeout
        return events


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop on a virtual clock starting at 0.0 (see the module docstring)."""

    def __init__(self) -> None:
        self._clock = _Clock()
        super().__init__(_JumpingSelector(self._clock))

    def time(self) -> float:
        return self._clock.now


def on_virtual_clock(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an ``async def`` test (no fixtures) to completion on a :class:`VirtualClockLoop`.

    The decorated test is a plain function to pytest, so pytest-asyncio leaves it alone.
    """

    @functools.wraps(test)
    def run() -> None:
        with asyncio.Runner(loop_factory=VirtualClockLoop, debug=True) as runner:
            runner.run(test())

    return run
