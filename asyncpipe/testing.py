"""Helpers for testing handlers and pipelines.

A node test is a few lines::

    from asyncpipe.testing import run_handler

    async def test_double():
        result = await run_handler(Double(), [[1, 2], [3]])
        assert result.outputs == [[2, 4], [6]]

For whole pipelines, feed a source node a list, end it with a :class:`CollectingSink`, and
run it with :func:`run_pipeline`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ._deadletter import DeadLetter
from ._executor import PipelineExecutor
from ._graph import HandlerNode
from ._metrics import PipelineMetrics

__all__ = ["CollectingSink", "HandlerRun", "list_source", "run_handler", "run_pipeline"]


def list_source(items: Iterable[Any]) -> list[Any]:
    """A source that emits ``items`` in order (a list is already a source; this names it)."""
    return list(items)


class CollectingSink:
    """A sink handler that keeps every message it receives, in order, in ``items``.

    ``await sink.wait_for(n)`` returns once ``n`` messages have arrived.
    """

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def __call__(self, message: Any) -> None:
        self.items.append(message)
        count = len(self.items)
        for entry in [w for w in self._waiters if w[0] <= count]:
            self._waiters.remove(entry)
            if not entry[1].done():
                entry[1].set_result(None)

    async def wait_for(self, count: int) -> list[Any]:
        if len(self.items) < count:
            future = asyncio.get_running_loop().create_future()
            self._waiters.append((count, future))
            await future
        return self.items


@dataclass(frozen=True)
class HandlerRun:
    """What :func:`run_handler` observed."""

    outputs: list[Any]
    dead_letters: list[DeadLetter]
    metrics: PipelineMetrics


async def run_pipeline(
    producer_nodes: Sequence[HandlerNode],
    consumer_nodes: Sequence[HandlerNode],
    *,
    timeout: float = 30.0,
    **executor_options: Any,
) -> PipelineExecutor:
    """Build a :class:`PipelineExecutor`, run it to completion within ``timeout`` seconds,
    and return it (for its metrics and dead letters)."""
    executor = PipelineExecutor(producer_nodes, consumer_nodes, **executor_options)
    async with asyncio.timeout(timeout):
        await executor.run()
    return executor


async def run_handler(
    handler: Any,
    messages: Iterable[Any],
    *,
    timeout: float = 30.0,
    max_workers: int | None = None,
    **node_options: Any,
) -> HandlerRun:
    """Run one handler over ``messages`` (source -> handler -> collecting sink)."""
    sink = CollectingSink()
    source = HandlerNode("source", list_source(messages))
    node = HandlerNode("handler", handler, dependencies=[source], **node_options)
    collect = HandlerNode("sink", sink, dependencies=[node])
    executor = await run_pipeline(
        [source], [node, collect], timeout=timeout, max_workers=max_workers
    )
    return HandlerRun(sink.items, executor.dead_letters, executor.metrics())
