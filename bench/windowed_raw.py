"""The hand-written asyncio aggregator of the windowed workload: the yardstick.

Three tasks joined by bounded ``asyncio.Queue`` s (``capacity`` messages each): a producer
puts the prepared batches, the aggregator folds each event into its window and emits every
window the watermark has passed, a collector stores what is emitted. Windows are integer
ids kept in a dict of per-key ``[count, sum]`` dicts; the watermark (largest event time
minus the lateness) is kept as "the lowest window id still open", updated only when the
largest event time grows, so an event costs a compare, a floor division and two dict
lookups. Windows still open at the end of the stream are flushed then.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .windowed import Emitted, Event, Job, WindowRun

__all__ = ["aggregate_raw"]

_STOP: Any = object()  # end of stream


async def aggregate_raw(job: Job) -> WindowRun:
    """Aggregate the job's batches by the rule of :mod:`bench.windowed`; time the run."""
    inbox: asyncio.Queue[Any] = asyncio.Queue(job.capacity)
    outbox: asyncio.Queue[Any] = asyncio.Queue(job.capacity)
    windows = _Windows(job.spec.window_s, job.spec.lateness_s)
    emitted: list[Emitted] = []

    async def produce() -> None:
        for batch in job.batches:
            await inbox.put(batch)
        await inbox.put(_STOP)

    async def aggregate() -> None:
        while (batch := await inbox.get()) is not _STOP:
            windows.fold(batch)
            for closed in windows.pop_closed():
                await outbox.put(closed)
        for rest in windows.pop_all():
            await outbox.put(rest)
        await outbox.put(_STOP)

    async def collect() -> None:
        while (closed := await outbox.get()) is not _STOP:
            emitted.extend(closed)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        group.create_task(produce(), name="windowed-raw-produce")
        group.create_task(aggregate(), name="windowed-raw-aggregate")
        group.create_task(collect(), name="windowed-raw-collect")
    return WindowRun.of(emitted, windows.late, time.perf_counter() - started)


class _Windows:
    """The open windows (window id -> key -> [count, sum]) and the watermark."""

    def __init__(self, size: int, lateness: float) -> None:
        self.size = size
        self.lateness = lateness
        self.open: dict[int, dict[str, list[int]]] = {}
        self.max_ts = float("-inf")
        self.open_from = -(2**62)  # windows with a lower id are closed
        self.late = 0

    def fold(self, batch: list[Event]) -> None:
        """Add a batch's events to their windows (the hot loop: locals only)."""
        size, lateness, open_windows = self.size, self.lateness, self.open
        max_ts, open_from, late = self.max_ts, self.open_from, self.late
        for event in batch:
            ts = event["ts"]
            if ts > max_ts:
                max_ts = ts
                open_from = int((ts - lateness) // size)
            window = int(ts // size)
            if window < open_from:
                late += 1
                continue
            per_key = open_windows.get(window)
            if per_key is None:
                per_key = open_windows[window] = {}
            acc = per_key.get(event["key"])
            if acc is None:
                per_key[event["key"]] = [1, event["value"]]
            else:
                acc[0] += 1
                acc[1] += event["value"]
        self.max_ts, self.open_from, self.late = max_ts, open_from, late

    def pop_closed(self) -> list[list[Emitted]]:
        """The windows the watermark has passed, oldest first, each as its keys' results."""
        closed = sorted(w for w in self.open if w < self.open_from)
        return [_emitted(window, self.open.pop(window)) for window in closed]

    def pop_all(self) -> list[list[Emitted]]:
        """Every window still open (the end of the stream), oldest first."""
        rest = [_emitted(window, self.open[window]) for window in sorted(self.open)]
        self.open.clear()
        return rest


def _emitted(window: int, per_key: dict[str, list[int]]) -> list[Emitted]:
    return [(key, window, acc[0], acc[1]) for key, acc in per_key.items()]
