"""The light-chain workloads of ``python -m bench`` (``--only per-item`` / ``batched``).

A source, four light stages (``x + 1``, ``x * 2``, ``x - 3``, ``x % 1000003``) and a
counting sink, with messages of one item or of lists of ``--batch`` items, through
asyncpipe and through the same chain written directly with ``asyncio.Queue`` stages (same
capacity, same functions, same loop type). A sample runs the ``--items`` chain pass after
pass until it has lasted ``--min-seconds``; the two sides alternate, and the ratio
reported is the median of the per-repeat ratios.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Sequence
from typing import Any

from asyncpipe import DEFAULT_CAPACITY, HandlerNode, PipelineExecutor

from .measure import RUN_TIMEOUT, Pairs, in_loop

__all__ = [
    "TARGET_BATCHED",
    "TARGET_PER_ITEM",
    "ChainWorkload",
    "chain_asyncpipe",
    "chain_raw",
    "run_chain",
]

TARGET_BATCHED = 0.9  # asyncpipe items/s over the raw chain's
TARGET_PER_ITEM = 0.7

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


# -- the two chains ------------------------------------------------------------------------


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
#: (is the baseline, chain), baseline first.
CHAINS: tuple[tuple[bool, Chain], ...] = ((True, chain_raw), (False, chain_asyncpipe))


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
    return in_loop(passes(), use_uvloop)


class ChainWorkload:
    """One of the two chain workloads: its messages and its pairs of measurements."""

    def __init__(self, label: str, items: int, batch: int | None, target: float) -> None:
        self.label = label
        self.items = items
        self.batched = batch is not None
        self.target = target
        self.messages: list[Any] = (
            [list(range(i, min(i + batch, items))) for i in range(0, items, batch)]
            if batch is not None
            else list(range(items))
        )
        self.pairs = Pairs()

    def measure(self, use_uvloop: bool, min_seconds: float, flip: bool) -> str:
        """One pair, run back to back (``flip``: asyncpipe first); a summary of it."""
        for is_raw, chain in CHAINS[::-1] if flip else CHAINS:
            rate = run_chain(
                chain, self.messages, self.items, self.batched, use_uvloop, min_seconds
            )
            self.pairs.add(is_raw, rate)
        return f"{self.label} {self.pairs.last():.2f}x"
