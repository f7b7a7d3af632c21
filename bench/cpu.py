"""The process-pool workload of ``python -m bench`` (``--only cpu``).

A ``cpu=True`` stage of pure-Python work on ``max_workers=2`` vs ``max_workers=1``. Each
run first sends one warm-up message per worker and starts the clock only once they are all
back, so process start-up and handler loading are excluded (and reported separately). The
same work on a bare ``ProcessPoolExecutor`` shows what the machine itself gives.

:func:`cpu_work` is a module-level function of an importable module (``bench.cpu``, not
``__main__``): worker processes import it by reference.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from asyncpipe import HandlerNode, PipelineExecutor

# Private on purpose: the raw pool must start its workers the way asyncpipe's own pool does
# (forkserver on Linux), or the comparison would measure the start method. No public API
# says which context asyncpipe uses.
from asyncpipe._offload import default_mp_context

from .measure import RUN_TIMEOUT, Pairs, in_loop

__all__ = ["PAIRS", "TARGET", "CpuRun", "CpuWorkload", "calibrate_cpu", "cpu_work"]

TARGET = 1.7  # speed-up of 2 workers over 1
PAIRS = 2  # (1 worker, 2 workers) pairs per repeat: they are short and noisy
WARM_UP_MS = 200  # each warm-up message holds its worker this long (all workers get one)


def cpu_work(rounds: int) -> int:
    """The CPU-heavy handler (runs in worker processes): pure-Python arithmetic.

    A negative argument is a warm-up message: the worker sleeps ``-rounds`` milliseconds,
    long enough for every worker of the pool to start and take one.
    """
    if rounds < 0:
        time.sleep(-rounds / 1000)
        return -1
    acc = 0
    for i in range(rounds):
        acc = (acc * 31 + i) % 1000003
    return acc


def calibrate_cpu(ms: float) -> int:
    """Rounds of :func:`cpu_work` that take about ``ms`` milliseconds here."""
    probe = 50_000
    deadline = time.perf_counter() + 0.2
    while time.perf_counter() < deadline:  # let the CPU settle (clock ramp-up, caches)
        cpu_work(probe)
    best = min(_timed(cpu_work, probe) for _ in range(7))
    return max(1, int(probe * ms / 1000 / best))


def _timed(fn: Callable[[int], object], arg: int) -> float:
    started = time.perf_counter()
    fn(arg)
    return time.perf_counter() - started


@dataclass
class CpuRun:
    seconds: float  # from the end of the warm-up to the last result
    startup: float  # pool start and handler loading, as far as it shows


async def cpu_asyncpipe(max_workers: int, messages: int, rounds: int) -> CpuRun:
    """A source, a ``cpu=True`` node and a sink, on a pool of ``max_workers`` processes.

    The source first sends one warm-up message per worker and holds the rest back until
    they are all through, so the clock starts with every worker up and its handler loaded.
    """
    warmed = asyncio.Event()
    marks: dict[str, float] = {}
    seen = 0

    async def source() -> AsyncIterator[int]:
        for _ in range(max_workers):
            yield -WARM_UP_MS
        await warmed.wait()
        marks["start"] = time.perf_counter()
        for _ in range(messages):
            yield rounds

    def sink(_result: int) -> None:
        nonlocal seen
        seen += 1
        if seen == 1:
            marks["first"] = time.perf_counter()
        if seen == max_workers:
            warmed.set()
        if seen == max_workers + messages:
            marks["end"] = time.perf_counter()

    began = time.perf_counter()
    src = HandlerNode("source", source)
    work = HandlerNode("work", cpu_work, dependencies=[src], cpu=True)
    out = HandlerNode("sink", sink, dependencies=[work])
    executor = PipelineExecutor(
        producer_nodes=[src], consumer_nodes=[work, out], max_workers=max_workers
    )
    async with asyncio.timeout(RUN_TIMEOUT):
        await executor.run()
    if seen != max_workers + messages:
        raise RuntimeError(f"cpu run: the sink saw {seen} results, not {max_workers + messages}")
    return CpuRun(
        seconds=marks["end"] - marks["start"],
        startup=marks["first"] - began - WARM_UP_MS / 1000,
    )


async def cpu_raw(max_workers: int, messages: int, rounds: int) -> CpuRun:
    """The reference: run_in_executor on a warmed ProcessPoolExecutor, 2 calls per worker
    in flight, results in order -- what the machine itself gives."""
    loop = asyncio.get_running_loop()
    began = time.perf_counter()
    pool = ProcessPoolExecutor(max_workers, mp_context=default_mp_context())
    try:
        warm_up = [loop.run_in_executor(pool, cpu_work, -WARM_UP_MS) for _ in range(max_workers)]
        await asyncio.gather(*warm_up)
        startup = time.perf_counter() - began - WARM_UP_MS / 1000
        slots = asyncio.Semaphore(2 * max_workers)

        async def one() -> int:
            async with slots:
                return await loop.run_in_executor(pool, cpu_work, rounds)

        async with asyncio.timeout(RUN_TIMEOUT):
            started = time.perf_counter()
            results = await asyncio.gather(*(one() for _ in range(messages)))
            seconds = time.perf_counter() - started
    finally:
        await asyncio.to_thread(pool.shutdown)
    if len(results) != messages:
        raise RuntimeError(f"raw cpu run: {len(results)} results, not {messages}")
    return CpuRun(seconds=seconds, startup=startup)


Runner = Callable[[int, int, int], Coroutine[Any, Any, CpuRun]]


@dataclass
class CpuWorkload:
    """1 worker vs 2 workers, through asyncpipe and (unless ``raw`` is off) a bare pool."""

    messages: int
    rounds: int
    raw: bool = True
    pairs: Pairs = field(default_factory=Pairs)  # baseline: 1 worker, candidate: 2 workers
    raw_pairs: Pairs = field(default_factory=Pairs)
    startups: list[float] = field(default_factory=list)  # asyncpipe's, excluded

    def measure(self, use_uvloop: bool, repeat: int) -> list[str]:
        """:data:`PAIRS` pairs per runner, alternating which pool size goes first."""
        runners: list[tuple[Pairs, Runner, str]] = [(self.pairs, cpu_asyncpipe, "cpu")]
        if self.raw:
            runners.append((self.raw_pairs, cpu_raw, "raw pool"))
        line = []
        for pairs, runner, label in runners:
            for i in range(PAIRS):
                for workers in (2, 1) if (repeat + i) % 2 else (1, 2):
                    gc.collect()
                    run = in_loop(runner(workers, self.messages, self.rounds), use_uvloop)
                    pairs.add(workers == 1, self.messages / run.seconds)
                    if runner is cpu_asyncpipe:
                        self.startups.append(run.startup)
                line.append(f"{label} {pairs.last():.2f}x")
        return line
