"""The Dask workload of ``python -m bench`` (``--only dask``).

The CPU-heavy stage of ``--only cpu`` (:func:`bench.cpu.cpu_work`, pure-Python arithmetic)
run three ways, for messages of several sizes -- milliseconds of CPU work per message:

* a plain loop calling the handler in this process (the baseline);
* asyncpipe with ``cpu=True`` on its own pool of 2 worker processes;
* asyncpipe with ``executor=DaskExecutor(cluster)`` on a ``LocalCluster`` of 2 worker
  processes (one thread each) on 127.0.0.1, started once for the whole workload.

Each asyncpipe run first sends one warm-up message per worker and starts the clock once
they are back (workers up, the handler set up), as ``--only cpu`` does. Dask's per-task
cost (scheduler round trip, the result fetched from the worker) is paid per message, so
below some size of message Dask is slower than the plain loop: the sweep shows where.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from asyncpipe import HandlerNode, PipelineExecutor

from .cpu import WARM_UP_MS, calibrate_cpu, cpu_work
from .measure import RUN_TIMEOUT, in_loop

__all__ = ["SIDES", "DaskWorkload", "dask_cluster"]

WORKERS = 2
SIDES = ("plain loop", "process pool", "Dask")
SERIAL_SECONDS = 0.4  # plain-loop work per run; the number of messages follows from it
MIN_MESSAGES, MAX_MESSAGES = 16, 400


@contextlib.contextmanager
def dask_cluster() -> Iterator[Any]:
    """A LocalCluster of :data:`WORKERS` worker processes, one thread each, on loopback."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=WORKERS,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
    ) as cluster:
        yield cluster


def messages_for(ms: float) -> int:
    return max(MIN_MESSAGES, min(MAX_MESSAGES, round(SERIAL_SECONDS * 1000 / ms)))


def plain_loop(messages: int, rounds: int) -> float:
    """Seconds for the handler called ``messages`` times in this process."""
    started = time.perf_counter()
    for _ in range(messages):
        cpu_work(rounds)
    return time.perf_counter() - started


async def offloaded(messages: int, rounds: int, **options: Any) -> float:
    """Seconds for ``messages`` through source -> offloaded ``cpu_work`` -> sink, after
    one warm-up message per worker (``options``: the node's ``cpu=`` or ``executor=``)."""
    warmed = asyncio.Event()
    marks: dict[str, float] = {}
    seen = 0

    async def source() -> AsyncIterator[int]:
        for _ in range(WORKERS):
            yield -WARM_UP_MS
        await warmed.wait()
        marks["start"] = time.perf_counter()
        for _ in range(messages):
            yield rounds

    def sink(_result: int) -> None:
        nonlocal seen
        seen += 1
        if seen == WORKERS:
            warmed.set()
        if seen == WORKERS + messages:
            marks["end"] = time.perf_counter()

    src = HandlerNode("source", source)
    work = HandlerNode("work", cpu_work, dependencies=[src], **options)
    out = HandlerNode("sink", sink, dependencies=[work])
    executor = PipelineExecutor(
        producer_nodes=[src], consumer_nodes=[work, out], max_workers=WORKERS
    )
    async with asyncio.timeout(RUN_TIMEOUT):
        await executor.run()
    if seen != WORKERS + messages:
        raise RuntimeError(f"dask bench: the sink saw {seen} results, not {WORKERS + messages}")
    return marks["end"] - marks["start"]


@dataclass
class SizeResults:
    """Messages per second of each side at one message size, run after run."""

    ms: float
    messages: int
    rates: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in SIDES})

    def rate(self, side: str) -> float:
        return statistics.median(self.rates[side])

    def speedups(self, side: str, over: str = "plain loop") -> list[float]:
        """Per-repeat speed-ups of ``side`` over ``over`` (by default the plain loop) of
        the same repeat."""
        base = self.rates[over]
        return [r / b for r, b in zip(self.rates[side], base, strict=True)]


@dataclass
class DaskWorkload:
    """The sweep over message sizes (ms of CPU work per message)."""

    sizes_ms: list[float]
    address: str
    results: list[SizeResults] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rounds = {ms: calibrate_cpu(ms) for ms in self.sizes_ms}
        self.results = [SizeResults(ms, messages_for(ms)) for ms in self.sizes_ms]

    def measure(self, use_uvloop: bool, repeat: int) -> list[str]:
        """One repeat: every size, the sides in an order that alternates by repeat."""
        from asyncpipe.dask import DaskExecutor

        line = []
        for size in self.results:
            rounds = self._rounds[size.ms]
            sides = SIDES if repeat % 2 == 0 else SIDES[::-1]
            for side in sides:
                gc.collect()
                if side == "plain loop":
                    seconds = plain_loop(size.messages, rounds)
                elif side == "process pool":
                    seconds = in_loop(offloaded(size.messages, rounds, cpu=True), use_uvloop)
                else:
                    dask = DaskExecutor(self.address)
                    seconds = in_loop(offloaded(size.messages, rounds, executor=dask), use_uvloop)
                size.rates[side].append(size.messages / seconds)
            line.append(f"dask {size.ms:g} ms {size.speedups('Dask')[-1]:.2f}x")
        return line

    def break_even(self, over: str = "plain loop") -> str:
        """Where Dask's median speed-up over ``over`` reaches 1 (and stays)."""
        ordered = sorted(self.results, key=lambda r: r.ms)
        reached = [statistics.median(r.speedups("Dask", over)) >= 1 for r in ordered]
        if not reached[-1]:
            return f"not reached up to {ordered[-1].ms:g} ms per message"
        first = len(reached) - reached[::-1].index(False) if False in reached else 0
        if first == 0:
            return f"at or below {ordered[0].ms:g} ms per message"
        return f"between {ordered[first - 1].ms:g} and {ordered[first].ms:g} ms per message"

    def report(self) -> None:
        """Print the table: msg/s per side, Dask's speed-ups over the plain loop and over
        the process pool (median and range of the repeats)."""
        print(
            f"\n{'CPU stage, 2 workers':<22}{'msgs':>6}{'plain loop':>12}{'process pool':>14}"
            f"{'pool/plain':>12}{'Dask':>9}{'Dask/plain':>12}{'range':>13}"
            f"{'Dask/pool':>11}{'range':>13}"
        )
        print("-" * 124)
        for size in sorted(self.results, key=lambda r: r.ms):
            dask = size.speedups("Dask")
            versus_pool = size.speedups("Dask", "process pool")
            pool = statistics.median(size.speedups("process pool"))
            print(
                f"{f'{size.ms:g} ms per message':<22}{size.messages:>6}"
                f"{size.rate('plain loop'):>12.1f}{size.rate('process pool'):>14.1f}"
                f"{pool:>11.2f}x{size.rate('Dask'):>9.1f}{statistics.median(dask):>11.2f}x"
                f"{min(dask):>7.2f}-{max(dask):.2f}x"
                f"{statistics.median(versus_pool):>10.2f}x"
                f"{min(versus_pool):>7.2f}-{max(versus_pool):.2f}x"
            )
        print(
            "msg/s, medians of the repeats; a/b: a's speed-up over b in the same repeat "
            "(median; range: lowest\nand highest repeat). Dask: a LocalCluster of 2 worker "
            f"processes, 1 thread each, on loopback.\nDask breaks even with the plain loop "
            f"{self.break_even()}; with the process pool {self.break_even('process pool')}."
        )
