"""Driving the windowed workload of ``python -m bench`` (``--only windowed``).

The events are generated once (:func:`~bench.windowed.make_events`) and the reference
computed once. Each repeat runs every fast contender once -- the hand-written asyncio
aggregator (:mod:`bench.windowed_raw`) and asyncpipe's (:mod:`bench.windowed_asyncpipe`)
-- each in a new event loop, alternating the order, and checks each run against the
reference. Bytewax (:mod:`bench.windowed_bytewax`) runs once, on the first
``bytewax_events`` events (checked against the reference of that prefix): it is two orders
of magnitude slower. Nothing here prints but the progress of Bytewax's run;
:mod:`bench.report` prints the table.
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import windowed_asyncpipe
from .measure import in_loop, k
from .windowed import (
    Aggregate,
    Check,
    Job,
    WindowedSpec,
    batched,
    compare,
    make_events,
    reference,
)
from .windowed_bytewax import aggregate_bytewax, bytewax_version
from .windowed_raw import aggregate_raw

__all__ = [
    "BASELINE",
    "TARGET_DURABLE",
    "TARGET_RATE",
    "TARGET_RATIO",
    "BytewaxResult",
    "WindowedWorkload",
    "contenders",
]

BASELINE = "hand-written asyncio"
TARGET_RATIO = 0.5  # asyncpipe (in-memory state) events/s over the hand-written aggregator's
TARGET_RATE = 300_000.0  # asyncpipe (in-memory state) events/s
TARGET_DURABLE = 1.25  # durable state's run time over in-memory state's, at most


def contenders() -> dict[str, Aggregate]:
    """The fast contenders, the baseline first."""
    return {BASELINE: aggregate_raw, **windowed_asyncpipe.SIDES}


@dataclass
class BytewaxResult:
    version: str
    events: int
    rate: float
    check: Check


class WindowedWorkload:
    """The events, the reference, and every contender's runs."""

    def __init__(self, spec: WindowedSpec, batch: int, bytewax_events: int) -> None:
        self.spec = spec
        self.batch = batch
        self.bytewax_events = min(bytewax_events, spec.events)
        started = time.perf_counter()
        self.events = make_events(spec)
        self.generation_seconds = time.perf_counter() - started
        self.batches = batched(self.events, batch)
        self.reference = reference(self.events, spec)
        self.sides = contenders()
        self.rates: dict[str, list[float]] = {name: [] for name in self.sides}
        self.checks: dict[str, list[Check]] = {name: [] for name in self.sides}
        self.bytewax: BytewaxResult | None = None

    def measure(self, use_uvloop: bool, flip: bool) -> str:
        """One run of each fast contender (``flip``: in reverse order); a summary."""
        names = list(self.sides)
        for name in names[::-1] if flip else names:
            with tempfile.TemporaryDirectory(prefix="asyncpipe-windowed-") as tmp:
                job = Job(self.batches, self.spec, Path(tmp))
                gc.collect()
                run = in_loop(self.sides[name](job), use_uvloop)
            self.rates[name].append(self.spec.events / run.seconds)
            self.checks[name].append(compare(self.reference, run))
        line = f"windowed {k(self.rates[BASELINE][-1])} events/s hand-written"
        for name in names[1:]:
            line += f", {name} {self.ratios(name)[-1]:.2f}x"
        return line

    def ratios(self, name: str, over: str = BASELINE) -> list[float]:
        """``name``'s events/s over ``over``'s, per repeat."""
        return [a / b for a, b in zip(self.rates[name], self.rates[over], strict=True)]

    def median_rate(self, name: str) -> float:
        return statistics.median(self.rates[name])

    def failed_check(self, name: str) -> Check | None:
        """The first run of ``name`` whose results differ from the reference, if any."""
        return next((check for check in self.checks[name] if not check.ok), None)

    def run_bytewax(self) -> None:
        """Bytewax once, on the first ``bytewax_events`` events (if it is installed)."""
        version = bytewax_version()
        if version is None or self.bytewax_events < 1:
            return
        events = self.events[: self.bytewax_events]
        print(f"  Bytewax {version} on the first {len(events):,} events ...", flush=True)
        gc.collect()
        run = aggregate_bytewax(events, self.spec, self.batch)
        expected = self.reference if len(events) == len(self.events) else None
        check = compare(expected or reference(events, self.spec), run)
        self.bytewax = BytewaxResult(version, len(events), len(events) / run.seconds, check)
        print(f"  Bytewax: {k(self.bytewax.rate)} events/s, {check.summary()}", flush=True)
