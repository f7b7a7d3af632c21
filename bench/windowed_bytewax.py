"""Bytewax 0.21 on the windowed workload (the ``bench`` extra installs it).

The dataflow a Bytewax user writes for it: ``TestingSource`` over the events in batches of
``batch``, ``key_on`` the key, ``fold_window`` with an ``EventClock`` (``ts_getter`` the
event time as an aware UTC datetime, ``wait_for_system_duration`` the lateness) and a
``TumblingWindower`` aligned to :data:`~bench.windowed.START_S`, the count and sum folded
into a ``(count, sum)`` tuple (``ordered=False``: order does not change a count or a sum,
and Bytewax then need not queue values until the watermark passes them); the windows and
the ``late`` stream go to ``TestingSink`` lists. It runs in this process on one worker
(``bytewax.testing.run_main``), timed from start to end of the run.

Bytewax's ``EventClock`` keeps one clock per key and advances that key's watermark with
the system time elapsed since its latest event (plus the batch's arrival time), so which
events it finds late depends on how fast it runs: a window can close while an event of
it, within the allowed disorder, is still on its way. ``now_getter`` (default: the system
clock, as in production) lets the tests give it a clock they control.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from .windowed import START_S, Emitted, Event, WindowedSpec, WindowRun

__all__ = ["aggregate_bytewax", "bytewax_version"]

_START = datetime.fromtimestamp(START_S, UTC)


def bytewax_version() -> str | None:
    """Bytewax's version, or None when it is not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bytewax")
    except PackageNotFoundError:
        return None


def aggregate_bytewax(
    events: list[Event],
    spec: WindowedSpec,
    batch: int,
    now_getter: Callable[[], datetime] | None = None,
) -> WindowRun:
    """Run the windowed aggregation as a Bytewax dataflow; time the run."""
    # Imported here: the rest of the benchmark runs without the bench extra.
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.operators.windowing import EventClock, TumblingWindower, fold_window
    from bytewax.testing import TestingSink, TestingSource, run_main

    first_window = START_S // spec.window_s

    def event_time(event: Event) -> datetime:
        return datetime.fromtimestamp(event["ts"], UTC)

    def fold(acc: tuple[int, int], event: Event) -> tuple[int, int]:
        return acc[0] + 1, acc[1] + event["value"]

    def merge(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
        return a[0] + b[0], a[1] + b[1]

    def emitted(item: tuple[str, tuple[int, tuple[int, int]]]) -> Emitted:
        key, (window, (count, total)) = item
        return key, first_window + window, count, total

    clock_options: dict[str, Any] = {} if now_getter is None else {"now_getter": now_getter}
    clock: EventClock[Event] = EventClock(
        ts_getter=event_time,
        wait_for_system_duration=timedelta(seconds=spec.lateness_s),
        **clock_options,
    )
    windower = TumblingWindower(length=timedelta(seconds=spec.window_s), align_to=_START)

    out: list[Emitted] = []
    late: list[Any] = []
    flow = Dataflow("windowed")
    keyed = op.key_on("key", op.input("events", flow, TestingSource(events, batch)), _key)
    windows = fold_window("count_sum", keyed, clock, windower, _zero, fold, merge, ordered=False)
    op.output("windows", op.map("emitted", windows.down, emitted), TestingSink(out))
    op.output("late", windows.late, TestingSink(late))
    # bytewax.testing.run_main is not annotated: called through a typed view of it.
    run: Callable[[Dataflow], None] = run_main
    started = time.perf_counter()
    run(flow)
    return WindowRun.of(out, len(late), time.perf_counter() - started)


def _key(event: Event) -> str:
    key: str = event["key"]
    return key


def _zero() -> tuple[int, int]:
    return 0, 0
