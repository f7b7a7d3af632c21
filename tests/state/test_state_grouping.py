"""Messages per commit: a lane applies the messages that are waiting (up to MAX_COMMIT)
before it commits them, and while a commit is being written it applies those that
arrive into the next one instead of waiting for it (fewer, larger commits), and nothing
of the results or of the stored state changes."""

from __future__ import annotations

import asyncio
from typing import Any

from pipelines import TIMEOUT
from windows_model import TumblingModel

from asyncpipe import HandlerNode, PipelineExecutor
from asyncpipe.state import MemoryStateStore, StateCommit, Tumbling, Windowed, count, total
from asyncpipe.state._lane import MAX_COMMIT, MAX_GROUP
from asyncpipe.testing import CollectingSink

Record = dict[str, Any]


class GatedStore(MemoryStateStore):
    """A persistent in-memory store whose first commit waits for ``gate``."""

    def __init__(self, gate: asyncio.Event) -> None:
        super().__init__(persistent=True)
        self.gate = gate
        self.commits: list[StateCommit] = []

    async def commit(self, namespace: str, commit: StateCommit) -> None:
        self.commits.append(commit)
        if len(self.commits) == 1:
            await self.gate.wait()
        await super().commit(namespace, commit)


async def run(messages: list[list[Record]], store: MemoryStateStore, gate: Any) -> list[Record]:
    """A list source -> tumbling windows of 10 s (key "k") -> sink; ``gate`` is set when
    the lane reads the time of the last record."""
    last = messages[-1][-1] if messages else None

    def time_of(record: Record) -> float:
        if record is last:
            gate.set()
        return float(record["t"])

    windows = Windowed(
        Tumbling(10), {"n": count(), "sum": total("v")}, event_time=time_of, allowed_lateness=2
    )
    sink = CollectingSink()
    source = HandlerNode("ingest", messages)
    # Room for every message: the source puts them all in before the lane has applied any.
    node = HandlerNode("win", windows, [source], key="k", capacity=len(messages) + 1)
    out = HandlerNode("sink", sink, [node])
    async with asyncio.timeout(TIMEOUT):
        await PipelineExecutor([source], [node, out], state_store=store).run()
    return [r for message in sink.items for r in message]


def table(records: list[Record]) -> dict[tuple[Any, Any], tuple[Any, ...]]:
    return {(r["key"], r["start"]): (r["n"], r["sum"]) for r in records}


async def test_messages_waiting_share_a_commit() -> None:
    n = MAX_COMMIT + 2 * MAX_GROUP
    records = [{"k": f"k{i % 7}", "t": i / 3, "v": i % 5} for i in range(n)]
    messages = [[r] for r in records]  # a message per record, all waiting at the start
    gate = asyncio.Event()
    store = GatedStore(gate)
    out = await run(messages, store, gate)
    # The first MAX_COMMIT messages waiting are applied into one commit; while it is being
    # written (held until the lane reads the last record) the others are applied into the
    # next one: two commits where groups of MAX_GROUP alone would be ten.
    assert len(store.commits) == 2
    model = TumblingModel(size=10, lateness=2)
    model.feed(records)
    assert table(out) == model.all_windows()
    assert not model.late
    # The store holds the open windows of the model: a restart emits them again at the end.
    again = await run([], store, asyncio.Event())
    open_windows = {(k, w * 10): tuple(acc) for (k, w), acc in model.open.items()}
    assert open_windows and table(again) == open_windows
