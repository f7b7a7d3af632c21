"""SqliteSink: rows of values in schema order, and the messages waiting in a serial sink's
inbox written in one transaction (``handle_group``); ``CsvSource(records="lists")``."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from conn_helpers import TIMEOUT, collect, query

from asyncpipe import HandlerNode, Outcome, PipelineExecutor
from asyncpipe.connectors import CsvSource, SqliteSink, _sqlite_db
from asyncpipe.testing import run_pipeline

SCHEMA = {"id": "INTEGER", "name": "TEXT NOT NULL", "score": "REAL"}


async def test_rows_of_values_are_written_in_schema_order(tmp_path: Path) -> None:
    db = tmp_path / "rows.db"
    batches = [[(1, "a", 0.5), [2, "b", 1.5]], [(1, "A", 2.5)]]  # the second updates id 1
    src = HandlerNode("src", batches)
    save = HandlerNode("save", SqliteSink(db, "t", key="id", schema=SCHEMA), [src])
    executor = await run_pipeline([src], [save], timeout=TIMEOUT)
    assert executor.dead_letters == []
    assert query(db, "SELECT * FROM t ORDER BY id") == [(1, "A", 2.5), (2, "b", 1.5)]


async def test_rows_that_cannot_be_written_are_dead_letters_beside_dicts(tmp_path: Path) -> None:
    db = tmp_path / "bad-rows.db"
    batch: list[Any] = [
        (1, "ok", 1.0),
        {"id": 2, "name": "a dict"},  # dicts and rows may share a batch
        (3, "short"),
        (None, "no key", 0.0),
        (5, None, 0.0),  # NOT NULL
        [6, "ok", 6.0],
    ]
    src = HandlerNode("src", [batch])
    save = HandlerNode("save", SqliteSink(db, "t", key="id", schema=SCHEMA), [src])
    executor = await run_pipeline([src], [save], timeout=TIMEOUT)
    assert query(db, "SELECT id FROM t ORDER BY id") == [(1,), (2,), (6,)]
    where = f"SqliteSink({str(db)!r}, table 't')"
    letters = {d.index: d.error_message for d in executor.dead_letters}
    assert letters == {
        2: f"{where}: a row of 2 values, expected 3 (id, name, score)",
        3: f"{where}: no value for key column(s) id",
        4: f"{where}: IntegrityError: NOT NULL constraint failed: t.name",
    }


async def test_rows_need_a_declared_schema(tmp_path: Path) -> None:
    db = tmp_path / "no-schema.db"
    src = HandlerNode("src", [[{"id": 1, "name": "x"}, (2, "y")]])
    save = HandlerNode("save", SqliteSink(db, "t", key="id"), [src])
    executor = await run_pipeline([src], [save], timeout=TIMEOUT)
    assert query(db, "SELECT id, name FROM t") == [(1, "x")]
    [letter] = executor.dead_letters
    assert letter.index == 1 and letter.error_message.endswith(
        "a row of values needs the sink's schema= (the column order)"
    )


class _HeldDatabase:
    """Keeps the shared database thread of ``path`` busy until released, and records the
    rows of each write the sinks hand it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.writes: list[int] = []
        self.write_started = asyncio.Event()
        self.busy = threading.Event()
        self.release = threading.Event()
        write = _sqlite_db.Database.write

        async def spy(db: _sqlite_db.Database, insert: Any, values: list[Any]) -> Any:
            self.writes.append(len(values) // len(insert.columns))
            self.write_started.set()
            return await write(db, insert, values)

        monkeypatch.setattr(_sqlite_db.Database, "write", spy)

    def hold(self, db: _sqlite_db.Database) -> asyncio.Task[None]:
        def wait() -> None:
            self.busy.set()
            self.release.wait(TIMEOUT)

        return asyncio.create_task(db.run(wait))


@pytest.mark.parametrize("group", [True, False])
async def test_messages_waiting_for_a_serial_sink_commit_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, group: bool
) -> None:
    path = tmp_path / "group.db"
    held = _HeldDatabase(monkeypatch)
    sink = SqliteSink(path, "t", key="id", schema=SCHEMA, group=group)
    ingress = HandlerNode("ingress")
    save = HandlerNode("save", sink, [ingress])
    messages: list[list[Any]] = [
        [(1, "first", 0.0)],
        [(2, "b", 0.0), {"id": 3, "name": "c"}],
        [(4, "d", 0.0), (5, None, 0.0), (6, "f", 0.0)],  # a refused row in the middle one
        [(7, "g", 0.0), (2, "B", 1.0)],  # later messages' values win
    ]
    async with PipelineExecutor([ingress], [save]) as executor:
        db = await _sqlite_db.Database.acquire(str(path), busy_timeout=1.0, synchronous="NORMAL")
        try:
            holding = held.hold(db)
            await asyncio.to_thread(held.busy.wait, TIMEOUT)
            first = await executor.submit("save", messages[0])
            await asyncio.wait_for(held.write_started.wait(), TIMEOUT)  # the sink is busy
            receipts = [await executor.submit("save", m) for m in messages[1:]]  # they wait
            held.release.set()
            await holding
            await first.wait(TIMEOUT)
            await receipts[0].wait(TIMEOUT)
            if group:  # the first receipt of the group resolves with all of it stored
                assert query(path, "SELECT id, name FROM t ORDER BY id") == [
                    (1, "first"),
                    (2, "B"),
                    (3, "c"),
                    (4, "d"),
                    (6, "f"),
                    (7, "g"),
                ]
            for receipt in receipts[1:]:
                await receipt.wait(TIMEOUT)
        finally:
            await db.release()
    assert query(path, "SELECT id, name FROM t WHERE id = 2") == [(2, "B")]
    # The first alone, then one write of the three others (group=True), or each alone.
    assert held.writes == ([1, 7] if group else [1, 2, 3, 2])
    committed = [r.items[Outcome.COMMITTED] for r in (first, *receipts)]
    assert committed == [1, 2, 2, 2]
    assert receipts[1].items[Outcome.DEAD_LETTERED] == 1
    [letter] = executor.dead_letters
    assert letter.index == 1 and letter.payload == (5, None, 0.0)
    assert "NOT NULL constraint failed: t.name" in letter.error_message


async def test_a_group_that_fails_is_retried_one_message_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "group-fails.db"
    held = _HeldDatabase(monkeypatch)
    sink = SqliteSink(path, "t", key="id", schema=SCHEMA, group=True)
    groups: list[int] = []

    async def failing_group(messages: list[Any]) -> Any:
        groups.append(len(messages))
        raise OSError("disk full, say")

    monkeypatch.setattr(sink, "handle_group", failing_group)
    ingress = HandlerNode("ingress")
    save = HandlerNode("save", sink, [ingress])
    async with PipelineExecutor([ingress], [save]) as executor:
        db = await _sqlite_db.Database.acquire(str(path), busy_timeout=1.0, synchronous="NORMAL")
        try:
            holding = held.hold(db)
            await asyncio.to_thread(held.busy.wait, TIMEOUT)
            first = await executor.submit("save", [(1, "a", 0.0)])
            await asyncio.wait_for(held.write_started.wait(), TIMEOUT)
            later = [await executor.submit("save", [(n, "x", 0.0)]) for n in (2, 3)]
            held.release.set()
            await holding
            for receipt in (first, *later):
                await receipt.wait(TIMEOUT)
        finally:
            await db.release()
    assert groups == [2]
    assert held.writes == [1, 1, 1]  # each message on its own, in order
    assert query(path, "SELECT id FROM t ORDER BY id") == [(1,), (2,), (3,)]
    assert all(r.items[Outcome.COMMITTED] == 1 for r in (first, *later))


async def test_a_csv_source_can_emit_rows_of_values(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("id,name,score\n1,a,0.5\n\n2,b,x\n3,c\n4,d,\n")
    source = CsvSource(path, batch_size=2, records="lists", types={"id": int, "score": float})
    batches, executor = await collect(source)
    assert batches == [[[1, "a", 0.5], [4, "d", None]]]
    letters = sorted((d.index, d.error_message) for d in executor.dead_letters)
    assert [index for index, _ in letters] == [4, 5]
    assert "'score'" in letters[0][1] and letters[1][1].endswith("expected 3 fields, got 2")
    untyped, executor = await collect(CsvSource(path, records="lists"))
    assert untyped == [[["1", "a", "0.5"], ["2", "b", "x"], ["4", "d", ""]]]
    assert [d.index for d in executor.dead_letters] == [5]
    with pytest.raises(ValueError, match="records must be 'auto', 'dicts' or 'lists'"):
        CsvSource(path, records="tuples")  # type: ignore[arg-type]


async def test_csv_rows_load_into_sqlite_as_dicts_do(tmp_path: Path) -> None:
    path = tmp_path / "load.csv"
    path.write_text("id,name,score\n" + "".join(f"{i},n{i},{i / 4}\n" for i in range(1000)))
    results = []
    for lists in (False, True):
        db = tmp_path / f"{lists}.db"
        source = CsvSource(path, batch_size=64, records="lists" if lists else "dicts")
        read = HandlerNode("read", source)
        sink = SqliteSink(db, "t", key="id", schema=SCHEMA)
        save = HandlerNode("save", sink, [read], capacity=2)
        await run_pipeline([read], [save], timeout=TIMEOUT)
        results.append(query(db, "SELECT * FROM t ORDER BY id"))
    assert results[0] == results[1] and len(results[0]) == 1000
    assert results[1][5] == (5, "n5", 1.25)
