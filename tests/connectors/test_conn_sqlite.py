"""SqliteSource and SqliteSink: chunks, read-only, upserts, commits, concurrent writers."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from conn_helpers import TIMEOUT, collect, flatten, query

from asyncpipe import HandlerError, HandlerNode, Outcome, PipelineExecutor
from asyncpipe.connectors import IterableSource, SqliteSink, SqliteSource, _sqlite_db
from asyncpipe.testing import run_pipeline

SCHEMA = {"id": "INTEGER", "name": "TEXT", "score": "REAL"}


def make_db(path: Path, rows: int) -> Path:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE clients (id INTEGER PRIMARY KEY, name TEXT, score REAL)")
        conn.executemany(
            "INSERT INTO clients VALUES (?, ?, ?)", [(i, f"c{i}", i / 2) for i in range(rows)]
        )
    conn.close()
    return path


async def write_batches(db: Path, batches: list[Any], **sink_options: Any) -> PipelineExecutor:
    src = HandlerNode("src", batches)
    save = HandlerNode("save", SqliteSink(db, "clients", **sink_options), [src])
    return await run_pipeline([src], [save], timeout=TIMEOUT)


# -- SqliteSource -------------------------------------------------------------------------


async def test_a_query_streams_in_chunks_with_bound_parameters(tmp_path: Path) -> None:
    db = make_db(tmp_path / "src.db", 10)
    source = SqliteSource(
        db, "SELECT id, name FROM clients WHERE id >= ? ORDER BY id", (5,), batch_size=2
    )
    messages, executor = await collect(source)
    assert [len(m) for m in messages] == [2, 2, 1]
    assert flatten(messages)[0] == {"id": 5, "name": "c5"}
    named = SqliteSource(db, "SELECT id FROM clients WHERE name = :name", {"name": "c3"})
    messages, _ = await collect(named)
    assert messages == [[{"id": 3}]]
    assert executor.dead_letters == []


async def test_the_source_connection_is_read_only(tmp_path: Path) -> None:
    db = make_db(tmp_path / "ro.db", 3)
    _, executor = await collect(SqliteSource(db, "DELETE FROM clients RETURNING id"))
    [letter] = executor.dead_letters
    assert "readonly" in letter.error_message
    assert query(db, "SELECT count(*) FROM clients") == [(3,)]


async def test_a_missing_database_or_bad_query_fails_the_source_naming_it(tmp_path: Path) -> None:
    _, executor = await collect(SqliteSource(tmp_path / "none.db", "SELECT 1"))
    [letter] = executor.dead_letters
    assert letter.error_type == "FileNotFoundError" and "none.db" in letter.error_message
    db = make_db(tmp_path / "q.db", 1)
    _, executor = await collect(SqliteSource(db, "SELECT * FROM nowhere"))
    [letter] = executor.dead_letters
    assert "no such table: nowhere" in letter.error_message


async def test_the_source_reads_a_database_a_sink_is_writing(tmp_path: Path) -> None:
    db = tmp_path / "wal.db"
    await write_batches(db, [[{"id": 1, "name": "a", "score": 1.0}]], key="id", schema=SCHEMA)
    messages, _ = await collect(SqliteSource(db, "SELECT * FROM clients"))
    assert messages == [[{"id": 1, "name": "a", "score": 1.0}]]


# -- SqliteSink ---------------------------------------------------------------------------


async def test_a_declared_schema_creates_the_table_in_wal_mode(tmp_path: Path) -> None:
    db = tmp_path / "out.db"
    await write_batches(db, [[{"id": 1, "name": "a", "score": 0.5}]], key="id", schema=SCHEMA)
    assert query(db, "SELECT * FROM clients") == [(1, "a", 0.5)]
    assert query(db, "PRAGMA journal_mode") == [("wal",)]
    [(sql,)] = query(db, "SELECT sql FROM sqlite_master WHERE name = 'clients'")
    assert sql == (
        'CREATE TABLE "clients" ("id" INTEGER PRIMARY KEY NOT NULL, "name" TEXT, "score" REAL)'
    )


async def test_without_a_schema_the_first_batch_decides_columns_and_types(tmp_path: Path) -> None:
    db = tmp_path / "inferred.db"
    batch = [{"id": 1, "name": None, "vip": True}, {"id": 2, "name": "b", "blob": b"\x00"}]
    await write_batches(db, [batch], key="id")
    columns = [(row[1], row[2]) for row in query(db, "PRAGMA table_info(clients)")]
    assert columns == [("id", "INTEGER"), ("name", "TEXT"), ("vip", "INTEGER"), ("blob", "BLOB")]
    assert query(db, "SELECT * FROM clients ORDER BY id") == [
        (1, None, 1, None),
        (2, "b", None, b"\x00"),
    ]


async def test_writing_the_same_batch_twice_leaves_the_same_rows(tmp_path: Path) -> None:
    db = tmp_path / "idem.db"
    batch = [{"id": i, "name": f"n{i}", "score": float(i)} for i in range(50)]
    await write_batches(db, [batch, batch], key="id", schema=SCHEMA)
    await write_batches(db, [batch], key="id", schema=SCHEMA)  # a replay after a restart
    assert query(db, "SELECT count(*), sum(score) FROM clients") == [(50, float(sum(range(50))))]
    changed = [{"id": 7, "name": "seven", "score": 70.0}]
    await write_batches(db, [changed], key="id", schema=SCHEMA)
    assert query(db, "SELECT name, score FROM clients WHERE id = 7") == [("seven", 70.0)]
    assert query(db, "SELECT count(*) FROM clients") == [(50,)]


async def test_a_composite_key(tmp_path: Path) -> None:
    db = tmp_path / "composite.db"
    rows = [{"day": "d1", "client": 1, "n": 1}, {"day": "d1", "client": 2, "n": 2}]
    src = HandlerNode("src", [rows, [{"day": "d1", "client": 1, "n": 10}]])
    save = HandlerNode("save", SqliteSink(db, "daily", key=("day", "client")), [src])
    await run_pipeline([src], [save], timeout=TIMEOUT)
    assert query(db, "SELECT * FROM daily ORDER BY client") == [("d1", 1, 10), ("d1", 2, 2)]


async def test_an_existing_table_gets_a_unique_index_on_the_key(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE clients (id INTEGER, name TEXT, score REAL, extra TEXT)")
    conn.close()
    batch = [{"id": 1, "name": "a", "score": 1.0}]
    await write_batches(db, [batch, batch], key="id")
    assert query(db, "SELECT id, name, extra FROM clients") == [(1, "a", None)]


async def test_columns_missing_from_an_existing_table_are_named(tmp_path: Path) -> None:
    db = make_db(tmp_path / "old.db", 0)
    executor = await write_batches(db, [[{"id": 1, "nickname": "x"}]], key="id")
    [letter] = executor.dead_letters
    assert "has no column(s) ['nickname']" in letter.error_message


async def test_bad_records_are_dead_letters_and_the_rest_is_committed(tmp_path: Path) -> None:
    db = tmp_path / "bad.db"
    schema = {"id": "INTEGER", "name": "TEXT NOT NULL", "score": "REAL"}
    ingress = HandlerNode("ingress")
    save = HandlerNode("save", SqliteSink(db, "clients", key="id", schema=schema), [ingress])
    batch: list[Any] = [
        {"id": 1, "name": "ok"},
        {"id": 2, "name": None},  # NOT NULL
        "not a record",
        {"name": "no key"},
        {"id": 3, "name": "ok", "score": {"a": 1}},  # SQLite cannot store a dict
        {"id": 4, "name": "ok", "ignored": 1},
    ]
    async with PipelineExecutor([ingress], [save]) as executor:
        receipt = await executor.submit("ingress", batch)
        await receipt.wait(TIMEOUT)
    assert query(db, "SELECT id FROM clients ORDER BY id") == [(1,), (4,)]
    assert receipt.items[Outcome.COMMITTED] == 2 and receipt.items[Outcome.DEAD_LETTERED] == 4
    letters = {d.index: d.error_message for d in executor.dead_letters}
    where = f"SqliteSink({str(db)!r}, table 'clients')"
    assert letters[1] == f"{where}: IntegrityError: NOT NULL constraint failed: clients.name"
    assert letters[2] == f"{where}: not a dict record (str)"
    assert letters[3] == f"{where}: no value for key column(s) id"
    assert letters[4].startswith(f"{where}: ProgrammingError")


async def test_a_receipt_resolves_only_once_its_rows_are_committed(tmp_path: Path) -> None:
    db = tmp_path / "receipts.db"
    ingress = HandlerNode("ingress")
    save = HandlerNode("save", SqliteSink(db, "clients", key="id", schema=SCHEMA), [ingress])
    async with PipelineExecutor([ingress], [save]) as executor:
        for n in range(5):
            receipt = await executor.submit("ingress", [{"id": n, "name": "x", "score": n}])
            await receipt.wait(TIMEOUT)
            # Another connection sees the row the moment the receipt resolves.
            assert query(db, "SELECT count(*) FROM clients") == [(n + 1,)]
            assert receipt.committed == 1


async def test_a_writer_holding_the_lock_delays_the_receipt_without_failing_it(
    tmp_path: Path,
) -> None:
    db = tmp_path / "locked.db"
    await write_batches(db, [[{"id": 0, "name": "a", "score": 0}]], key="id", schema=SCHEMA)
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process, say, is writing
    ingress = HandlerNode("ingress")
    save = HandlerNode("save", SqliteSink(db, "clients", key="id", schema=SCHEMA), [ingress])
    try:
        async with PipelineExecutor([ingress], [save]) as executor:
            receipt = await executor.submit("ingress", [{"id": 1, "name": "b", "score": 1}])
            with pytest.raises(TimeoutError):
                await receipt.wait(0.3)  # not committed while the lock is held
            await asyncio.to_thread(other.execute, "COMMIT")
            await receipt.wait(TIMEOUT)
        assert receipt.committed == 1 and executor.dead_letters == []
    finally:
        other.close()
    assert query(db, "SELECT count(*) FROM clients") == [(2,)]


async def test_several_nodes_write_one_database_concurrently(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    batches = [
        [{"id": b * 100 + i, "name": "x", "score": i} for i in range(100)] for b in range(40)
    ]
    src = HandlerNode("src", batches)
    sinks = [
        HandlerNode(
            f"save{n}",
            SqliteSink(db, f"t{n % 2}", key="id", schema=SCHEMA),
            [src],
            workers=3,
            retries=0,
            on_error="fail",
        )
        for n in range(4)
    ]
    other_src = HandlerNode("other_src", batches)
    other = HandlerNode(
        "other", SqliteSink(db, "t2", key="id", schema=SCHEMA), [other_src], on_error="fail"
    )
    await asyncio.gather(
        run_pipeline([src], sinks, timeout=TIMEOUT),
        run_pipeline([other_src], [other], timeout=TIMEOUT),
    )
    for table in ("t0", "t1", "t2"):
        assert query(db, f"SELECT count(*) FROM {table}") == [(4000,)]


async def test_a_failing_setup_names_the_database(tmp_path: Path) -> None:
    src = HandlerNode("src", [[{"id": 1}]])
    save = HandlerNode("save", SqliteSink(tmp_path / "no" / "such" / "dir.db", "t"), [src])
    with pytest.raises(HandlerError, match="dir.db"):
        await run_pipeline([src], [save], timeout=TIMEOUT)


def test_bad_sink_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not in the schema"):
        SqliteSink(tmp_path / "x.db", "t", key="id", schema={"name": "TEXT"})
    with pytest.raises(ValueError, match="synchronous"):
        SqliteSink(tmp_path / "x.db", "t", synchronous="SOMETIMES")
    with pytest.raises(ValueError, match="not a valid SQL name"):
        SqliteSink(tmp_path / "x.db", "")


async def test_the_sink_works_without_a_pipeline(tmp_path: Path) -> None:
    db = tmp_path / "direct.db"
    async with SqliteSink(db, "clients", key="id") as sink:
        await sink.handle({"id": 1, "name": "solo"})
    async with SqliteSink(db, "clients", key="id") as sink:
        await sink.handle(IterableSource([], batch_size=1).items)  # an empty batch: nothing
    assert query(db, "SELECT * FROM clients") == [(1, "solo")]


async def test_a_key_repeated_within_a_batch_keeps_the_last_values(tmp_path: Path) -> None:
    db = tmp_path / "repeat.db"
    batch = [{"id": i % 3, "name": f"v{i}", "score": float(i)} for i in range(450)]
    await write_batches(db, [batch], key="id", schema=SCHEMA)
    assert query(db, "SELECT id, name FROM clients ORDER BY id") == [
        (0, "v447"),
        (1, "v448"),
        (2, "v449"),
    ]


async def test_a_batch_of_several_statements_commits_as_one_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch beyond one statement's rows is BEGIN, several statements, COMMIT; a bad row
    # in the third statement still leaves the rows of the first two committed with the rest.
    monkeypatch.setattr(_sqlite_db, "_ROWS_PER_STATEMENT", 2)
    db = tmp_path / "statements.db"
    schema = {"id": "INTEGER", "name": "TEXT NOT NULL", "score": "REAL"}
    good = [{"id": i, "name": f"c{i}", "score": i} for i in range(7)]
    bad = [*good[:5], {"id": 5, "name": None, "score": 5}, good[6]]
    executor = await write_batches(db, [good, bad], key="id", schema=schema)
    assert query(db, "SELECT count(*) FROM clients") == [(7,)]
    [letter] = executor.dead_letters
    assert letter.index == 5 and "NOT NULL constraint failed" in letter.error_message


async def test_values_that_do_not_make_whole_rows_are_refused(tmp_path: Path) -> None:
    db = await _sqlite_db.Database.acquire(
        str(tmp_path / "rows.db"), busy_timeout=1.0, synchronous="NORMAL"
    )
    try:
        with pytest.raises(ValueError, match="5 values do not make rows of 2"):
            await db.write(_sqlite_db.Insert("t", ["a", "b"]), [1, 2, 3, 4, 5])
    finally:
        await db.release()


async def test_a_write_cancelled_before_it_starts_is_not_made(tmp_path: Path) -> None:
    path = tmp_path / "cancel.db"
    db = await _sqlite_db.Database.acquire(str(path), busy_timeout=1.0, synchronous="NORMAL")
    try:
        await db.execute("CREATE TABLE t (a INTEGER, b TEXT)")
        busy, release = threading.Event(), threading.Event()

        def hold() -> None:
            busy.set()
            release.wait(TIMEOUT)

        holding = asyncio.create_task(db.run(hold))
        await asyncio.to_thread(busy.wait, TIMEOUT)  # the database thread is taken
        insert = _sqlite_db.Insert("t", ["a", "b"])
        cancelled = asyncio.create_task(db.write(insert, [1, "cancelled"]))
        await asyncio.sleep(0)  # queued behind hold()
        cancelled.cancel()
        release.set()
        await holding
        assert await db.write(insert, [2, "made"]) == []
        assert cancelled.cancelled()
    finally:
        await db.release()
    assert query(path, "SELECT a, b FROM t") == [(2, "made")]


async def test_with_two_workers_batches_are_written_in_arrival_order(tmp_path: Path) -> None:
    db = tmp_path / "order.db"
    batches = [[{"id": 1, "name": f"v{n}", "score": n}] for n in range(60)]
    src = HandlerNode("src", batches)
    sink = SqliteSink(db, "clients", key="id", schema=SCHEMA)
    save = HandlerNode("save", sink, [src], workers=2, capacity=4)
    await run_pipeline([src], [save], timeout=TIMEOUT)
    assert query(db, "SELECT name, score FROM clients") == [("v59", 59.0)]


async def _queued_behind_a_busy_thread(
    db: _sqlite_db.Database, writes: list[tuple[_sqlite_db.Insert, list[Any]]]
) -> list[Any]:
    """Make ``writes`` while the database thread is taken, then let it go: their results."""
    busy, release = threading.Event(), threading.Event()

    def hold() -> None:
        busy.set()
        release.wait(TIMEOUT)

    holding = asyncio.create_task(db.run(hold))
    await asyncio.to_thread(busy.wait, TIMEOUT)
    tasks = [asyncio.create_task(db.write(insert, values)) for insert, values in writes]
    await asyncio.sleep(0)  # every write queued behind hold()
    release.set()
    await holding
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_writes_queued_behind_a_busy_thread_commit_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    groups: list[int] = []
    together = _sqlite_db.Database._write_together

    def spy(self: _sqlite_db.Database, writes: list[Any]) -> Any:
        groups.append(len(writes))
        return together(self, writes)

    monkeypatch.setattr(_sqlite_db.Database, "_write_together", spy)
    path = tmp_path / "group.db"
    db = await _sqlite_db.Database.acquire(str(path), busy_timeout=1.0, synchronous="NORMAL")
    try:
        await db.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT)")
        await db.execute("CREATE TABLE u (a INTEGER PRIMARY KEY)")
        t, u = _sqlite_db.Insert("t", ["a", "b"], ["a"]), _sqlite_db.Insert("u", ["a"])
        results = await _queued_behind_a_busy_thread(
            db, [(t, [1, "x", 2, "y"]), (u, [1]), (t, [1, "z"]), (u, [2, 3])]
        )
        assert results == [[], [], [], []]
        assert groups == [4]  # one transaction for the four
        assert await db.write(u, [4]) == [] and groups == [4]  # alone: a statement of its own
    finally:
        await db.release()
    assert query(path, "SELECT * FROM t ORDER BY a") == [(1, "z"), (2, "y")]  # in order
    assert query(path, "SELECT * FROM u ORDER BY a") == [(1,), (2,), (3,), (4,)]


async def test_a_bad_row_in_a_joint_commit_costs_only_itself(tmp_path: Path) -> None:
    path = tmp_path / "group-bad.db"
    db = await _sqlite_db.Database.acquire(str(path), busy_timeout=1.0, synchronous="NORMAL")
    try:
        await db.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT NOT NULL)")
        t = _sqlite_db.Insert("t", ["a", "b"], ["a"])
        first, second, third = await _queued_behind_a_busy_thread(
            db, [(t, [1, "a"]), (t, [2, None, 3, "c"]), (t, [4, "d"])]
        )
    finally:
        await db.release()
    assert first == [] and third == []
    [(index, error)] = second
    assert index == 0 and isinstance(error, sqlite3.IntegrityError)
    assert query(path, "SELECT a FROM t ORDER BY a") == [(1,), (3,), (4,)]
