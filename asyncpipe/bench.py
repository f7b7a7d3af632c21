"""Throughput benchmark: ``python -m asyncpipe.bench [--only WORKLOAD] [--repeat K] [--quick]``.

Four workloads, each measured against a baseline in the same run (the machine is shared
and noisy, so the ratios matter more than the absolute figures):

* **per-item** and **batched**: a source, four light stages (``x + 1``, ``x * 2``,
  ``x - 3``, ``x % 1000003``) and a counting sink, with messages of one item or of lists of
  ``--batch`` items, through asyncpipe and through the same chain written directly with
  ``asyncio.Queue`` stages (same capacity, same functions, same loop type). A sample runs
  the ``--items`` chain pass after pass until it has lasted ``--min-seconds``; the two sides
  alternate, and the ratio reported is the median of the per-repeat ratios.
* **cpu**: a ``cpu=True`` stage of pure-Python work on ``max_workers=2`` vs
  ``max_workers=1``. Each run first sends one warm-up message per worker and starts the
  clock only once they are all back, so process start-up and handler loading are excluded
  (and reported separately). The same work on a bare ``ProcessPoolExecutor`` shows what
  the machine itself gives.
* **csv**: upsert ``--rows`` CSV rows into SQLite, ``--batch`` rows per transaction,
  through ``CsvSource -> SqliteSink`` and through a plain synchronous ``csv.reader`` +
  ``sqlite3.executemany`` loop (see ``asyncpipe._bench_csv``). Each run is a fresh process,
  so its peak RSS is its own.

The CPU handler is a module-level function of ``asyncpipe.bench``: worker processes import
it by reference, which is also why the command line lives behind ``main()``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from asyncpipe import DEFAULT_CAPACITY, HandlerNode, PipelineExecutor
from asyncpipe._bench_csv import BASELINE, JUDGED, SIDES, CsvResults, csv_workload
from asyncpipe._bench_csv import TARGET as TARGET_CSV
from asyncpipe._offload import default_mp_context
from asyncpipe._runner import loop_factory

__all__ = ["cpu_work", "main"]

T = TypeVar("T")

RUN_TIMEOUT = 300.0  # seconds: a run that takes longer is a hang, not a measurement
WARM_UP_MS = 200  # each warm-up message holds its worker this long (all workers get one)
TARGET_BATCHED = 0.9
TARGET_PER_ITEM = 0.7
TARGET_CPU = 1.7
WORKLOADS = ("per-item", "batched", "cpu", "csv")
CPU_PAIRS = 2  # cpu (1 worker, 2 workers) pairs per repeat: they are short and noisy

_STOP: Any = object()  # end of stream in the raw asyncio chain


# -- the work ------------------------------------------------------------------------------


def add1(x: int) -> int:
    return x + 1


def mul2(x: int) -> int:
    return x * 2


def sub3(x: int) -> int:
    return x - 3


def mod_p(x: int) -> int:
    return x % 1000003


def add1_batch(xs: list[int]) -> list[int]:
    return [x + 1 for x in xs]


def mul2_batch(xs: list[int]) -> list[int]:
    return [x * 2 for x in xs]


def sub3_batch(xs: list[int]) -> list[int]:
    return [x - 3 for x in xs]


def mod_p_batch(xs: list[int]) -> list[int]:
    return [x % 1000003 for x in xs]


ITEM_STAGES: tuple[Callable[[Any], Any], ...] = (add1, mul2, sub3, mod_p)
BATCH_STAGES: tuple[Callable[[Any], Any], ...] = (add1_batch, mul2_batch, sub3_batch, mod_p_batch)


class Counter:
    """The sink: counts the items it receives (``len`` of a list message, else 1)."""

    def __init__(self) -> None:
        self.items = 0

    def one(self, _item: Any) -> None:
        self.items += 1

    def many(self, items: list[Any]) -> None:
        self.items += len(items)


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


# -- light chain: asyncpipe and raw asyncio --------------------------------------------------


async def chain_asyncpipe(
    messages: list[Any],
    stages: Sequence[Callable[[Any], Any]],
    sink: Callable[[Any], None],
    capacity: int,
) -> None:
    source = HandlerNode("source", messages)
    consumers: list[HandlerNode] = []
    previous = source
    for i, stage in enumerate(stages, 1):
        previous = HandlerNode(f"stage{i}", stage, dependencies=[previous], capacity=capacity)
        consumers.append(previous)
    consumers.append(HandlerNode("sink", sink, dependencies=[previous], capacity=capacity))
    await PipelineExecutor(producer_nodes=[source], consumer_nodes=consumers).run()


async def chain_raw(
    messages: list[Any],
    stages: Sequence[Callable[[Any], Any]],
    sink: Callable[[Any], None],
    capacity: int,
) -> None:
    queues: list[asyncio.Queue[Any]] = [asyncio.Queue(capacity) for _ in range(len(stages) + 1)]

    async def produce(outbox: asyncio.Queue[Any]) -> None:
        for message in messages:
            await outbox.put(message)
        await outbox.put(_STOP)

    async def transform(
        fn: Callable[[Any], Any], inbox: asyncio.Queue[Any], outbox: asyncio.Queue[Any]
    ) -> None:
        while (message := await inbox.get()) is not _STOP:
            await outbox.put(fn(message))
        await outbox.put(_STOP)

    async def consume(inbox: asyncio.Queue[Any]) -> None:
        while (message := await inbox.get()) is not _STOP:
            sink(message)

    async with asyncio.TaskGroup() as group:
        group.create_task(produce(queues[0]))
        for fn, inbox, outbox in zip(stages, queues, queues[1:], strict=False):
            group.create_task(transform(fn, inbox, outbox))
        group.create_task(consume(queues[-1]))


Chain = Callable[[list[Any], Sequence[Callable[[Any], Any]], Callable[[Any], None], int], Any]


def run_chain(
    chain: Chain,
    messages: list[Any],
    items: int,
    batched: bool,
    use_uvloop: bool,
    min_seconds: float,
) -> float:
    """Run a chain pass after pass (a fresh pipeline each) in one event loop until
    ``min_seconds`` have been measured; return items/s. Every pass is checked for loss."""
    stages = BATCH_STAGES if batched else ITEM_STAGES

    async def passes() -> float:
        done, elapsed = 0, 0.0
        while elapsed < min_seconds:
            counter = Counter()
            sink = counter.many if batched else counter.one
            async with asyncio.timeout(RUN_TIMEOUT):
                started = time.perf_counter()
                await chain(messages, stages, sink, DEFAULT_CAPACITY)
                elapsed += time.perf_counter() - started
            if counter.items != items:
                raise RuntimeError(f"{chain.__name__}: the sink counted {counter.items} items")
            done += items
        return done / elapsed

    gc.collect()
    return _run(passes(), use_uvloop)


# -- CPU stage -----------------------------------------------------------------------------


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


def run_cpu(
    runner: Callable[[int, int, int], Awaitable[CpuRun]],
    max_workers: int,
    messages: int,
    rounds: int,
    use_uvloop: bool,
) -> CpuRun:
    gc.collect()
    return _run(runner(max_workers, messages, rounds), use_uvloop)


# -- driving -------------------------------------------------------------------------------


def _run(coro: Awaitable[T], use_uvloop: bool) -> T:
    async def main() -> T:
        return await coro

    with asyncio.Runner(loop_factory=loop_factory(use_uvloop)) as runner:
        return runner.run(main())


def _loop_name(use_uvloop: bool) -> str:
    async def probe() -> str:
        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    return _run(probe(), use_uvloop)


@dataclass
class Pairs:
    """Interleaved measurements of a baseline and a candidate (rates: higher is better)."""

    baseline: list[float] = field(default_factory=list)
    candidate: list[float] = field(default_factory=list)

    def add(self, is_baseline: bool, rate: float) -> None:
        (self.baseline if is_baseline else self.candidate).append(rate)

    def ratio(self) -> float:
        """Median of the per-repeat ratios (each pair ran back to back)."""
        return statistics.median(c / b for c, b in zip(self.candidate, self.baseline, strict=True))

    def best_ratio(self) -> float:
        return max(self.candidate) / max(self.baseline)


@dataclass
class Results:
    per_item: Pairs = field(default_factory=Pairs)
    batched: Pairs = field(default_factory=Pairs)
    cpu: Pairs = field(default_factory=Pairs)  # baseline: 1 worker, candidate: 2 workers
    cpu_raw: Pairs = field(default_factory=Pairs)
    startups: list[float] = field(default_factory=list)
    csv: CsvResults | None = None


def _k(rate: float) -> str:
    return f"{rate / 1000:,.1f}k"


def _met(value: float, target: float) -> bool:
    return round(value, 2) >= target  # judged on the figure as printed


def _verdict(value: float, target: float) -> str:
    return "ok" if _met(value, target) else "MISSED"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m asyncpipe.bench",
        description="asyncpipe throughput vs raw asyncio and a plain CSV -> SQLite loop, "
        "and process-pool speed-up.",
    )
    parser.add_argument("--items", type=int, default=200_000, help="items per chain pass")
    parser.add_argument(
        "--batch", type=int, default=500, help="items per batched message (csv: per transaction)"
    )
    parser.add_argument("--repeat", type=int, default=5, help="repeats (medians are reported)")
    parser.add_argument(
        "--min-seconds",
        type=float,
        default=0.5,
        help="a chain sample repeats its pass until it has measured this long",
    )
    parser.add_argument("--cpu-messages", type=int, default=80, help="messages per cpu run")
    parser.add_argument("--cpu-ms", type=float, default=15.0, help="CPU work per message, ms")
    parser.add_argument("--rows", type=int, default=1_000_000, help="csv: rows upserted")
    parser.add_argument(
        "--no-raw-cpu", action="store_true", help="skip the raw process-pool reference"
    )
    parser.add_argument("--no-uvloop", action="store_true", help="use the default event loop")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument(
        "--only",
        choices=WORKLOADS,
        action="append",
        help="run only this workload (repeatable)",
    )
    parser.add_argument(
        "--check", action="store_true", help="exit with status 1 if a target is missed"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.items = min(args.items, 20_000)
        args.repeat = 1
        args.min_seconds = min(args.min_seconds, 0.05)
        args.cpu_messages = min(args.cpu_messages, 12)
        args.cpu_ms = min(args.cpu_ms, 10.0)
        args.rows = min(args.rows, 100_000)
    if min(args.items, args.batch, args.repeat, args.cpu_messages, args.rows) < 1:
        parser.error("--items, --batch, --repeat, --cpu-messages and --rows must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    use_uvloop = not args.no_uvloop
    workloads = set(args.only or WORKLOADS)
    n, batch = args.items, args.batch
    per_item_messages: list[Any] = list(range(n))
    batched_messages: list[Any] = [list(range(i, min(i + batch, n))) for i in range(0, n, batch)]
    rounds = calibrate_cpu(args.cpu_ms) if "cpu" in workloads else 0

    print(
        f"asyncpipe.bench: Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"loop={_loop_name(use_uvloop)}, items={n:,}, batch={batch}, repeat={args.repeat}, "
        f"capacity={DEFAULT_CAPACITY}, cpu={args.cpu_messages} messages x {args.cpu_ms:g} ms, "
        f"csv={args.rows:,} rows",
        flush=True,
    )
    results = Results()
    chains: list[tuple[bool, Chain]] = [(True, chain_raw), (False, chain_asyncpipe)]
    with contextlib.ExitStack() as stack:
        csv = None
        if "csv" in workloads:
            csv = stack.enter_context(csv_workload(args.rows, batch, use_uvloop))
            results.csv = csv.results
        for r in range(args.repeat):
            flip = r % 2 == 1  # alternate who goes first, so drift hits both sides alike
            line: list[str] = []
            for label, pairs, messages, is_batched in (
                ("per-item", results.per_item, per_item_messages, False),
                ("batched", results.batched, batched_messages, True),
            ):
                if label not in workloads:
                    continue
                for is_raw, chain in chains[::-1] if flip else chains:
                    rate = run_chain(chain, messages, n, is_batched, use_uvloop, args.min_seconds)
                    pairs.add(is_raw, rate)
                line.append(f"{label} {pairs.candidate[-1] / pairs.baseline[-1]:.2f}x")
            if "cpu" in workloads:
                runners = [(results.cpu, cpu_asyncpipe, "cpu")]
                if not args.no_raw_cpu:
                    runners.append((results.cpu_raw, cpu_raw, "raw pool"))
                for pairs, runner, label in runners:
                    for i in range(CPU_PAIRS):
                        for workers in (2, 1) if (r + i) % 2 else (1, 2):
                            run = run_cpu(runner, workers, args.cpu_messages, rounds, use_uvloop)
                            pairs.add(workers == 1, args.cpu_messages / run.seconds)
                            if runner is cpu_asyncpipe:
                                results.startups.append(run.startup)
                        line.append(f"{label} {pairs.candidate[-1] / pairs.baseline[-1]:.2f}x")
            if csv is not None:
                for side in list(SIDES)[::-1] if flip else SIDES:
                    csv.measure(side)
                serial = csv.results.ratios("asyncpipe, workers=1")[-1]
                line.append(f"csv {serial:.2f}x/{csv.results.ratios()[-1]:.2f}x (workers=1/2)")
            print(f"  repeat {r + 1}/{args.repeat}: " + ", ".join(line), flush=True)

    failed = _report(args, results)
    return 1 if args.check and failed else 0


def _report(args: argparse.Namespace, results: Results) -> bool:
    """Print the tables; return whether a target was missed."""
    failed = False
    columns = f"{'raw asyncio':>15}{'asyncpipe':>15}{'ratio':>8}{'best/best':>11}{'target':>8}"
    rows = [
        ("per-item (1 item/msg)", results.per_item, TARGET_PER_ITEM),
        (f"batched ({args.batch} items/msg)", results.batched, TARGET_BATCHED),
    ]
    if results.per_item.baseline or results.batched.baseline:
        print(f"\n{'4-stage chain, items/s':<26}{columns}  result")
        print("-" * 91)
    for label, pairs, target in rows:
        if not pairs.baseline:
            continue
        ratio = pairs.ratio()
        failed |= not _met(ratio, target)
        print(
            f"{label:<26}{_k(statistics.median(pairs.baseline)):>15}"
            f"{_k(statistics.median(pairs.candidate)):>15}{ratio:>7.2f}x"
            f"{pairs.best_ratio():>10.2f}x{target:>7.2f}x  {_verdict(ratio, target)}"
        )
    if results.cpu.baseline:
        columns = f"{'1 worker':>15}{'2 workers':>15}{'speed-up':>9}{'best/best':>10}{'target':>8}"
        print(f"\n{'cpu=True stage, msg/s':<26}{columns}  result")
        print("-" * 91)
        speedup = results.cpu.ratio()
        failed |= not _met(speedup, TARGET_CPU)
        for label, pairs, verdict in (
            ("asyncpipe", results.cpu, f"{TARGET_CPU:>7.2f}x  {_verdict(speedup, TARGET_CPU)}"),
            ("raw ProcessPoolExecutor", results.cpu_raw, f"{'':>8}  (what the machine gives)"),
        ):
            if pairs.baseline:
                print(
                    f"{label:<26}{statistics.median(pairs.baseline):>15.1f}"
                    f"{statistics.median(pairs.candidate):>15.1f}{pairs.ratio():>8.2f}x"
                    f"{pairs.best_ratio():>9.2f}x{verdict}"
                )
        print(
            "steady state after one warm-up message per worker; asyncpipe's pool start-up and "
            f"handler loading\n(excluded) took {1000 * statistics.median(results.startups):.0f} ms "
            "median"
        )
    if results.csv is not None:
        failed |= _report_csv(results.csv)
    print(
        "\nratio, speed-up (judged against the target): median of the ratios of the pairs run"
        "\nback to back (asyncpipe/baseline; 2 workers/1 worker). best/best: best run of one"
        "\nside over best run of the other; range: the lowest and highest pair."
        + (f" cpu: {CPU_PAIRS} pairs per repeat." if results.cpu.baseline else "")
    )
    return failed


def _report_csv(csv: CsvResults) -> bool:
    """Print the CSV -> SQLite table; return whether the target was missed."""
    print(
        f"\n{'CSV -> SQLite upsert':<26}{'rows/s':>10}{'seconds':>9}{'peak RSS':>10}"
        f"{'growth':>8}{'ratio':>8}{'range':>12}{'target':>8}  result"
    )
    print("-" * 97)
    for side, runs in csv.runs.items():
        seconds = statistics.median(run.seconds for run in runs)
        memory = (
            f"{max(run.peak_kb for run in runs) / 1024:>7.0f} MB"
            f"{max(run.growth_kb for run in runs) / 1024:>5.0f} MB"
        )
        verdict = ""
        if side != BASELINE:
            ratios = csv.ratios(side)
            verdict = f"{csv.ratio(side):>7.2f}x{min(ratios):>6.2f}-{max(ratios):.2f}x"
            if side == JUDGED:
                verdict += f"{TARGET_CSV:>7.2f}x  {_verdict(csv.ratio(), TARGET_CSV)}"
        print(f"{side:<26}{_k(csv.rate(side)):>10}{seconds:>9.2f}{memory}{verdict}")
    print(
        f"{csv.rows:,} rows, {csv.batch}-row transactions; each run a fresh process. peak RSS: "
        "the\nprocess's resident size at its highest during the run (VmHWM; the largest of "
        "the runs);\ngrowth: that minus its RSS just before the run. plain loop: csv.reader "
        "+ executemany +\ncommit per batch. workers: the sink node's (2: a batch is handed "
        "to the database thread\nwhile the previous one commits); the target is judged on "
        "workers=2."
    )
    return not _met(csv.ratio(), TARGET_CSV)


if __name__ == "__main__":
    # Run the copy imported as ``asyncpipe.bench`` rather than ``__main__``, so that the
    # handler pickled for worker processes is found by reference as asyncpipe.bench.cpu_work.
    from asyncpipe.bench import main as _main

    sys.exit(_main())
