"""asyncpipe's contenders in the windowed workload: the hook.

:data:`SIDES` maps a contender's label to an :data:`~bench.windowed.Aggregate`: an async
function of a :class:`~bench.windowed.Job` that builds the pipeline (source over
``job.batches`` -> a keyed tumbling-window count+sum node -> a sink appending the emitted
windows to a list), runs it, and returns ``WindowRun.of(emitted, late, seconds)`` with
``emitted`` as ``(key, window id, count, sum)`` tuples, ``late`` the events it left out as
late, and ``seconds`` measured around ``executor.run()``. The durable variant keeps its
state store in ``job.directory`` (a fresh directory per run). Every entry is measured
against the hand-written aggregator in the same run, checked against the reference, and
tested at a small size by ``tests/bench/test_bench_windowed.py``.

asyncpipe has no windows yet (issue 14: they are being built): the table is empty, and
``python -m bench --only windowed`` says so instead of judging the targets.
"""

from __future__ import annotations

from .windowed import Aggregate

__all__ = ["DURABLE", "IN_MEMORY", "SIDES"]

IN_MEMORY = "asyncpipe, in-memory state"
DURABLE = "asyncpipe, durable SQLite state"

#: label -> contender; :data:`IN_MEMORY` and :data:`DURABLE` are the ones judged.
SIDES: dict[str, Aggregate] = {}
