"""asyncpipe's contenders in the windowed workload: ``Windowed`` in a keyed node.

:data:`SIDES` maps a contender's label to an :data:`~bench.windowed.Aggregate`: an async
function of a :class:`~bench.windowed.Job` that runs the pipeline and returns what it
emitted. Both contenders run the same three nodes -- the prepared batches as a source,
``HandlerNode("agg", Windowed(Tumbling(60), {"count": count(), "sum": total("value")},
event_time="ts", allowed_lateness=5), [source], key="key")`` and a sink appending the
window records to a list -- and differ in the executor's state store: a
``MemoryStateStore()`` (state in the node's memory), or a ``SqliteStateStore`` file in
``job.directory`` (a fresh directory per run). Late events are the records dead-lettered
"late by Ns". Each contender is measured against the hand-written aggregator in the same
run, checked against the reference, and tested at a small size by
``tests/bench/test_bench_windowed.py``.
"""

from __future__ import annotations

import time
from typing import Any

from asyncpipe import HandlerNode, PipelineExecutor
from asyncpipe.state import (
    MemoryStateStore,
    SqliteStateStore,
    StateStore,
    Tumbling,
    Windowed,
    count,
    total,
)

from .windowed import Aggregate, Emitted, Job, WindowRun

__all__ = ["DURABLE", "IN_MEMORY", "SIDES", "aggregate_asyncpipe"]

IN_MEMORY = "asyncpipe, in-memory state"
DURABLE = "asyncpipe, durable SQLite state"


async def aggregate_asyncpipe(job: Job, store: StateStore) -> WindowRun:
    """source -> ``Windowed`` keyed on ``key`` -> list sink, on ``store``; timed around
    the executor's run."""
    spec = job.spec
    windows: list[dict[str, Any]] = []
    source = HandlerNode("events", job.batches)
    windowed = Windowed(
        Tumbling(spec.window_s),
        {"count": count(), "sum": total("value")},
        event_time="ts",
        allowed_lateness=spec.lateness_s,
    )
    agg = HandlerNode("agg", windowed, [source], key="key", capacity=job.capacity)
    sink = HandlerNode("sink", windows.extend, [agg], capacity=job.capacity)
    executor = PipelineExecutor([source], [agg, sink], state_store=store)
    started = time.perf_counter()
    await executor.run()
    seconds = time.perf_counter() - started
    late = [dl for dl in executor.dead_letters if dl.error_message.startswith("late by")]
    if len(late) != len(executor.dead_letters):
        raise RuntimeError(f"unexpected dead letters: {executor.dead_letters[:3]}")
    size = spec.window_s
    emitted: list[Emitted] = [
        (w["key"], int(w["start"] // size), w["count"], w["sum"]) for w in windows
    ]
    return WindowRun.of(emitted, len(late), seconds)


async def _in_memory(job: Job) -> WindowRun:
    return await aggregate_asyncpipe(job, MemoryStateStore())


async def _durable(job: Job) -> WindowRun:
    return await aggregate_asyncpipe(job, SqliteStateStore(job.directory / "state.db"))


#: label -> contender; :data:`IN_MEMORY` and :data:`DURABLE` are the ones judged.
SIDES: dict[str, Aggregate] = {IN_MEMORY: _in_memory, DURABLE: _durable}
