"""Shared mode: two pipelines (as two server processes would) running the same stateful
node over one store, racing on the same keys."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pipelines import TIMEOUT

from asyncpipe import HandlerNode, PipelineExecutor
from asyncpipe.state import (
    PickleCodec,
    PostgresStateStore,
    SqliteStateStore,
    StateCommit,
    StateStore,
    Tumbling,
    Windowed,
    count,
    stateful_map,
)

Record = dict[str, Any]
Plan = list[tuple[str, list[Record]]]
KEYS = ("a", "b", "c")


@pytest.fixture(params=["sqlite", "postgres"])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., StateStore]:
    """``factory(shared=...)``: a new store object over the test's storage (one per
    'process')."""
    if request.param == "sqlite":
        return lambda **options: SqliteStateStore(tmp_path / "state.db", **options)
    dsn: str = request.getfixturevalue("pg_dsn")
    return lambda **options: PostgresStateStore(dsn, **options)


def numbered(seen: int, record: Record) -> tuple[int, Record]:
    return seen + 1, {"k": record["k"], "seq": seen + 1}


class Table:
    """What an upsert sink keyed on ``k`` ends with, written by both pipelines."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.writes = 0

    async def write(self, records: list[Record]) -> None:
        await asyncio.sleep(0)  # the other pipeline's writes may come in between
        self.rows.update((r["k"], r["seq"]) for r in records)
        self.writes += len(records)


async def run(
    store: StateStore, table: Table, plan: Plan, started: asyncio.Barrier | None = None
) -> None:
    """ingest -> numbering per key -> table; once both pipelines run (``started``), every
    batch submitted, yielding between two, then waited."""
    ingest = HandlerNode("ingest")
    node = HandlerNode("number", stateful_map(numbered, lambda key: 0), [ingest], key="k")
    out = HandlerNode("table", table.write, [node])
    async with PipelineExecutor([ingest], [node, out], state_store=store) as executor:
        if started is not None:
            await started.wait()
        receipts = []
        for origin, batch in plan:
            receipts.append(await executor.submit("ingest", batch, origin=origin))
            await asyncio.sleep(0)  # the other pipeline's turn
        for receipt in receipts:
            await receipt


def plans() -> tuple[Plan, Plan]:
    """Two streams of batches over the same keys; the last four batches of each are sent
    to both (a client resending a batch to the other process)."""
    one: Plan = [
        (f"one{i}", [{"k": KEYS[(i + j) % 3]} for j in range(i % 4 + 1)]) for i in range(30)
    ]
    two: Plan = [
        (f"two{i}", [{"k": KEYS[(i * j) % 3]} for j in range(i % 3 + 1)]) for i in range(30)
    ]
    return one + two[-4:], two + one[-4:]


async def stored(store: StateStore) -> dict[str, int]:
    await store.open()
    try:
        return {pickle.loads(k): pickle.loads(v) for k, v in await store.scan("number")}
    finally:
        await store.aclose()


async def test_two_processes_on_the_same_keys_count_each_record_once(
    shared_store: Callable[..., StateStore],
) -> None:
    one, two = plans()
    table, started = Table(), asyncio.Barrier(2)
    async with asyncio.timeout(TIMEOUT):
        await asyncio.gather(
            run(shared_store(shared=True), table, one, started),
            run(shared_store(shared=True), table, two, started),
        )
    expected = {k: 0 for k in KEYS}
    for _, batch in dict([*one, *two]).items():  # each origin once
        for record in batch:
            expected[record["k"]] += 1
    assert await stored(shared_store()) == expected
    # Outputs reached the table in commit order: it ends with each key's last count, and
    # every record was numbered (and written) once.
    assert table.rows == expected
    assert table.writes == sum(expected.values())


async def test_without_shared_mode_the_same_race_loses_updates(
    shared_store: Callable[..., StateStore],
) -> None:
    """The control: what shared mode prevents happens without it."""
    one, two = plans()
    started = asyncio.Barrier(2)
    async with asyncio.timeout(TIMEOUT):
        await asyncio.gather(
            run(shared_store(), Table(), one[:-4], started),
            run(shared_store(), Table(), two[:-4], started),
        )
    total = sum(len(batch) for _, batch in one[:-4] + two[:-4])
    assert sum((await stored(shared_store())).values()) < total


async def test_outputs_a_dead_process_left_undelivered_are_sent_first(
    shared_store: Callable[..., StateStore],
) -> None:
    left = shared_store(shared=True)
    await left.open()  # a process that committed, then died before delivering
    codec = PickleCodec()
    outputs = codec.encode([{"k": "a", "seq": 7}])
    commit = StateCommit(
        changes=[(codec.encode("a"), codec.encode(7))], marks=[("old", b"", outputs)]
    )
    await left.commit("number", commit)
    await left.aclose()
    table = Table()
    async with asyncio.timeout(TIMEOUT):
        await run(shared_store(shared=True), table, [("new", [{"k": "a"}])])
    assert table.rows == {"a": 8}  # 7 delivered first, then 8 on the state it left
    assert table.writes == 2
    store = shared_store()
    await store.open()
    try:
        assert await store.undelivered("number") == []
    finally:
        await store.aclose()


async def test_a_windowed_node_refuses_shared_mode(tmp_path: Path) -> None:
    ingest = HandlerNode("ingest", [[{"k": "a", "t": 1.0}]])
    windows = HandlerNode(
        "w", Windowed(Tumbling(10.0), {"n": count()}, event_time="t"), [ingest], key="k"
    )
    store = SqliteStateStore(tmp_path / "state.db", shared=True)
    with pytest.raises(Exception, match="cannot run over a store in shared mode"):
        async with asyncio.timeout(TIMEOUT):
            await PipelineExecutor([ingest], [windows], state_store=store).run()
