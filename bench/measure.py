"""What every benchmark of ``python -m bench`` shares: running a coroutine on the chosen
loop, interleaved baseline/candidate pairs, and judging a ratio against its target."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpipe

__all__ = ["RUN_TIMEOUT", "Pairs", "in_loop", "k", "loop_name", "met", "verdict"]

T = TypeVar("T")

RUN_TIMEOUT = 300.0  # seconds: a run that takes longer is a hang, not a measurement


def in_loop(coro: Coroutine[Any, Any, T], use_uvloop: bool) -> T:
    """Run ``coro`` in a new event loop: uvloop's when installed and ``use_uvloop``."""
    return asyncpipe.run(coro, use_uvloop=use_uvloop)


def loop_name(use_uvloop: bool) -> str:
    """The module of the loop :func:`in_loop` runs on: ``uvloop`` or ``asyncio``."""

    async def probe() -> str:
        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    return in_loop(probe(), use_uvloop)


@dataclass
class Pairs:
    """Interleaved measurements of a baseline and a candidate (rates: higher is better)."""

    baseline: list[float] = field(default_factory=list)
    candidate: list[float] = field(default_factory=list)

    def add(self, is_baseline: bool, rate: float) -> None:
        (self.baseline if is_baseline else self.candidate).append(rate)

    def last(self) -> float:
        """The ratio of the latest pair."""
        return self.candidate[-1] / self.baseline[-1]

    def ratio(self) -> float:
        """Median of the per-repeat ratios (each pair ran back to back)."""
        return statistics.median(c / b for c, b in zip(self.candidate, self.baseline, strict=True))

    def best_ratio(self) -> float:
        return max(self.candidate) / max(self.baseline)


def k(rate: float) -> str:
    """A rate in thousands: ``12,345.6`` -> ``12.3k``."""
    return f"{rate / 1000:,.1f}k"


def met(value: float, target: float) -> bool:
    """Whether ``value`` reaches ``target``, judged on the figure as printed."""
    return round(value, 2) >= target


def verdict(value: float, target: float) -> str:
    return "ok" if met(value, target) else "MISSED"
