"""The windowed keyed aggregation workload of ``python -m bench`` (``--only windowed``):
the data, the rule every contender must follow, and the plain reference.

Events are dicts ``{"key": "k00042", "ts": 1704067260.123, "value": 17}``: ``key`` one of
``keys`` strings, ``ts`` the event time in seconds since the Unix epoch (millisecond
resolution, starting 2024-01-01 00:00 UTC and spread evenly over ``span_s``), ``value`` an
integer in 1..100. Each event's time is its slot's time minus a random delay of 0 to
``disorder_s``, so an event is never more than ``disorder_s`` older than any event before
it. Seeded: the same :class:`WindowedSpec` gives the same events.

The rule: tumbling windows of ``window_s`` seconds (window id ``int(ts // window_s)``), per
key and window the count and the sum of ``value``. The watermark is the largest event time
seen so far (the current event included) minus ``lateness_s``; a window is closed once the
watermark reaches its end, and an event whose window is closed is late: it is counted as
late and left out of every window. Nothing depends on wall time or on batch boundaries, so
the results depend only on the data. With ``disorder_s <= lateness_s`` no event is late.

:func:`reference` computes the results with a plain sequential loop over dicts;
:func:`compare` says how a contender's results differ from it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncpipe import DEFAULT_CAPACITY

__all__ = [
    "START_S",
    "Aggregate",
    "Check",
    "Emitted",
    "Event",
    "Job",
    "WindowRun",
    "WindowedSpec",
    "Windows",
    "batched",
    "compare",
    "make_events",
    "reference",
]

START_S = 1_704_067_200  # 2024-01-01 00:00:00 UTC: the first event's slot

Event = dict[str, Any]  # {"key": str, "ts": float, "value": int}
#: (key, window id) -> (count, sum)
Windows = dict[tuple[str, int], tuple[int, int]]
#: A window as a contender emits it: (key, window id, count, sum).
Emitted = tuple[str, int, int, int]


@dataclass(frozen=True)
class WindowedSpec:
    """The workload's size and its windowing rule."""

    events: int = 1_000_000
    keys: int = 10_000
    span_s: int = 7_200  # event times cover about two hours
    disorder_s: float = 5.0  # an event is at most this much older than any before it
    window_s: int = 60  # tumbling windows of one minute
    lateness_s: float = 5.0  # watermark = largest event time seen - lateness_s
    seed: int = 14


@dataclass
class WindowRun:
    """What one contender produced, and how long it took."""

    windows: Windows
    late: int  # events left out as late
    seconds: float
    duplicates: int = 0  # windows emitted more than once (the last emission is kept)

    @classmethod
    def of(cls, emitted: list[Emitted], late: int, seconds: float) -> WindowRun:
        """A run from the windows in the order they were emitted."""
        windows: Windows = {}
        for key, window, count, total in emitted:
            windows[key, window] = (count, total)
        return cls(windows, late, seconds, duplicates=len(emitted) - len(windows))


@dataclass(frozen=True)
class Job:
    """What a contender gets for one run."""

    batches: list[list[Event]]  # the events in arrival order, as lists of ``--batch``
    spec: WindowedSpec
    directory: Path  # a fresh empty directory of this run's own (for state files)
    capacity: int = DEFAULT_CAPACITY  # messages per queue or channel


#: A contender: runs the aggregation on the running event loop, timed by itself (from
#: just before its pipeline starts to the last window stored, not the setup before).
Aggregate = Callable[[Job], Coroutine[Any, Any, WindowRun]]


@dataclass
class Check:
    """A contender's results against the reference."""

    wrong: list[tuple[str, int]] = field(default_factory=list)  # count or sum differ
    missing: list[tuple[str, int]] = field(default_factory=list)  # never emitted
    extra: list[tuple[str, int]] = field(default_factory=list)  # not in the reference
    late: int = 0
    expected_late: int = 0
    duplicates: int = 0

    @property
    def ok(self) -> bool:
        return not (
            self.wrong
            or self.missing
            or self.extra
            or self.duplicates
            or self.late != self.expected_late
        )

    def summary(self) -> str:
        if self.ok:
            return "equal to the reference"
        parts = [
            f"{len(self.wrong)} wrong",
            f"{len(self.missing)} missing",
            f"{len(self.extra)} extra",
            f"{self.late} late (reference {self.expected_late})",
        ]
        if self.duplicates:
            parts.append(f"{self.duplicates} emitted twice")
        return ", ".join(parts)


def make_events(spec: WindowedSpec) -> list[Event]:
    """The workload's events, in arrival order (deterministic for a given spec)."""
    rnd = random.Random(spec.seed)
    names = [f"k{i:05d}" for i in range(spec.keys)]
    span_ms, disorder_ms, n = spec.span_s * 1000, int(spec.disorder_s * 1000), spec.events
    start_ms = START_S * 1000
    events = []
    for i in range(n):
        delay = int(rnd.random() * (disorder_ms + 1))
        ms = max(0, i * span_ms // n - delay)
        events.append(
            {
                "key": names[int(rnd.random() * spec.keys)],
                # From whole milliseconds: one correctly rounded division, so every
                # contender sees exactly the same float.
                "ts": (start_ms + ms) / 1000,
                "value": 1 + int(rnd.random() * 100),
            }
        )
    return events


def batched(events: list[Event], size: int) -> list[list[Event]]:
    """The events as lists of ``size`` (the last one shorter)."""
    return [events[i : i + size] for i in range(0, len(events), size)]


def reference(events: list[Event], spec: WindowedSpec) -> WindowRun:
    """The results by the rule of this module, computed by a plain loop over dicts."""
    started = time.perf_counter()
    size, lateness = spec.window_s, spec.lateness_s
    sums: dict[tuple[str, int], list[int]] = {}
    max_ts = float("-inf")
    late = 0
    for event in events:
        ts = event["ts"]
        max_ts = max(max_ts, ts)
        window = int(ts // size)
        if (window + 1) * size <= max_ts - lateness:
            late += 1
            continue
        acc = sums.setdefault((event["key"], window), [0, 0])
        acc[0] += 1
        acc[1] += event["value"]
    windows = {cell: (acc[0], acc[1]) for cell, acc in sums.items()}
    return WindowRun(windows, late, time.perf_counter() - started)


def compare(expected: WindowRun, got: WindowRun) -> Check:
    """How ``got`` differs from ``expected`` (the reference), window by window."""
    check = Check(
        late=got.late,
        expected_late=expected.late,
        duplicates=got.duplicates,
        extra=sorted(cell for cell in got.windows if cell not in expected.windows),
    )
    for cell, value in expected.windows.items():
        other = got.windows.get(cell)
        if other is None:
            check.missing.append(cell)
        elif other != value:
            check.wrong.append(cell)
    return check
