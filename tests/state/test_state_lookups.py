"""Two stateful nodes in a row: the second looks up (``store.seen()``) only the names of
messages it may have seen -- not those of outputs the first made in this run -- and still
recognises what the first sends again from its outbox after a crash."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from pipelines import TIMEOUT

from asyncpipe import HandlerNode, PipelineAborted, PipelineExecutor
from asyncpipe.state import KeyedHandler, SqliteStateStore, StoredMark
from asyncpipe.testing import CollectingSink


class Running(KeyedHandler):
    """Per key: the running sum of ``v``, emitted once per message and key."""

    def update(self, key: Any, state: Any, records: list[Any]) -> tuple[Any, list[Any]]:
        total = (state or 0) + sum(r["v"] for r in records)
        return total, [{"k": key, "v": total}]


class CountingStore(SqliteStateStore):
    """An SQLite store that records the names each node looks up."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.looked_up: dict[str, list[str]] = {}

    async def seen(self, namespace: str, names: Sequence[str]) -> dict[str, StoredMark]:
        self.looked_up.setdefault(namespace, []).extend(names)
        return await super().seen(namespace, names)


def chain(store: CountingStore, sink: Any, lanes: int) -> PipelineExecutor:
    ingest = HandlerNode("ingest")
    first = HandlerNode("first", Running(), [ingest], key=lambda r: r["k"])
    second = HandlerNode("second", Running(), [first], key=lambda r: r["k"], workers=lanes)
    out = HandlerNode("sink", sink, [second])
    return PipelineExecutor([ingest], [first, second, out], state_store=store)


@pytest.mark.parametrize("lanes", [1, 2])
async def test_fresh_outputs_are_not_looked_up_downstream(tmp_path: Path, lanes: int) -> None:
    store = CountingStore(tmp_path / "state.db")
    sink = CollectingSink()
    executor = chain(store, sink, lanes)
    async with asyncio.timeout(TIMEOUT):
        async with executor:
            for n in range(3):
                batch = [{"k": "a", "v": 1}, {"k": "b", "v": 10}]
                await (await executor.submit("ingest", batch, origin=f"b{n}"))
            # b1 sent again: "first" recognises it by its name, and sends nothing on.
            await (await executor.submit("ingest", [{"k": "a", "v": 1}], origin="b1"))
    assert len(store.looked_up["first"]) == 4  # the submitted messages: any may be a replay
    assert store.looked_up.get("second", []) == []
    totals = {r["k"]: r["v"] for message in sink.items for r in message}
    assert totals == {"a": 6, "b": 60}  # running sums of running sums: each applied once


async def test_outputs_sent_again_are_still_looked_up_and_recognised(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    arrived = asyncio.Event()

    async def stuck(message: Any) -> None:  # a sink that never commits
        arrived.set()
        await asyncio.Event().wait()

    first_run = chain(CountingStore(path), stuck, 1)
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(PipelineAborted):
            async with first_run:
                receipt = await first_run.submit("ingest", [{"k": "a", "v": 5}], origin="b1")
                await arrived.wait()  # both nodes committed; nothing delivered to the end
                first_run.abort()  # the crash
                await receipt
    store = CountingStore(path)
    sink = CollectingSink()
    second_run = chain(store, sink, 1)
    async with asyncio.timeout(TIMEOUT):
        async with second_run:
            await (await second_run.submit("ingest", [{"k": "a", "v": 1}], origin="b2"))
    # "first" sends b1's outputs again from its outbox: "second" looks their name up (and
    # only theirs: b2's outputs are fresh) and recognises them.
    assert [name.split("\x1f")[0] for name in store.looked_up["second"]] == ["first\x1eb1"]
    assert sink.items == [[{"k": "a", "v": 5}], [{"k": "a", "v": 11}]]
