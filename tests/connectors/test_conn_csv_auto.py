"""``CsvSource(records="auto")``: rows of values (``asyncpipe.Rows``) when every consumer
accepts them, dicts otherwise -- and the same table, the same dead letters, either way."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Literal

import asyncpg
from conn_helpers import TIMEOUT, query

from asyncpipe import HandlerNode, Rows
from asyncpipe.connectors import CsvSource, PostgresSink, SqliteSink
from asyncpipe.testing import run_pipeline

SCHEMA = {"id": "INTEGER", "name": "TEXT NOT NULL", "score": "REAL CHECK (score >= 0)"}
CSV = "id,name,score\n1,a,0.5\n2,b,1.5\n3,c\n4,d,-1\n,e,2\n5,,3\n6,f,6\n"
Mode = Literal["auto", "dicts"]


class Seen:
    """A consumer that accepts rows (or not) and keeps the messages it is given."""

    def __init__(self, accepts_rows: bool) -> None:
        self.accepts_rows = accepts_rows
        self.messages: list[Any] = []

    async def handle(self, message: Any) -> None:
        self.messages.append(message)


async def fetch(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(row) for row in await conn.fetch(sql)]
    finally:
        await conn.close()


def write(path: Path, text: str = CSV) -> Path:
    path.write_text(text)
    return path


async def load(
    tmp_path: Path, records: Mode, text: str = CSV, *consumers: Any
) -> tuple[list[Any], list[tuple[int | None, str, Any]]]:
    """Load the CSV into a fresh table (plus ``consumers`` beside the sink); return the
    table's rows and the dead letters (index, reason, payload)."""
    csv_path = write(tmp_path / f"{records}.csv", text)
    db = tmp_path / f"{records}.db"
    source = CsvSource(csv_path, batch_size=3, records=records, types={"id": int})
    read = HandlerNode("read", source)
    save = HandlerNode("save", SqliteSink(db, "t", key="id", schema=SCHEMA), [read])
    others = [HandlerNode(f"other{i}", c, [read]) for i, c in enumerate(consumers)]
    executor = await run_pipeline([read], [save, *others], timeout=TIMEOUT)
    letters = [
        (d.index, d.error_message.replace(str(db), "DB").replace(str(csv_path), "CSV"), d.payload)
        for d in executor.dead_letters
    ]
    return query(db, "SELECT * FROM t ORDER BY id"), sorted(letters, key=repr)


async def test_rows_go_to_a_schema_sink_and_dicts_to_any_other_consumer(tmp_path: Path) -> None:
    rows_only = Seen(accepts_rows=True)
    (tmp_path / "rows").mkdir()
    await load(tmp_path / "rows", "auto", CSV, rows_only)
    assert rows_only.messages and all(type(m) is Rows for m in rows_only.messages)
    assert rows_only.messages[0].columns == ("id", "name", "score")
    assert rows_only.messages[0] == [[1, "a", "0.5"], [2, "b", "1.5"], [4, "d", "-1"]]

    # One consumer that takes dicts, and the source emits dicts to every consumer.
    fan_rows, fan_dicts = Seen(accepts_rows=True), Seen(accepts_rows=False)
    (tmp_path / "fan").mkdir()
    table, _ = await load(tmp_path / "fan", "auto", CSV, fan_rows, fan_dicts)
    for seen in (fan_rows, fan_dicts):
        assert all(type(m) is list for m in seen.messages)
        assert seen.messages[0][0] == {"id": 1, "name": "a", "score": "0.5"}
    assert table == (await load(tmp_path, "dicts"))[0]


async def test_a_plain_function_downstream_gets_dicts(tmp_path: Path) -> None:
    got: list[Any] = []
    source = CsvSource(write(tmp_path / "f.csv"), batch_size=10)
    read = HandlerNode("read", source)
    keep = HandlerNode("keep", got.extend, [read])
    await run_pipeline([read], [keep], timeout=TIMEOUT)
    assert got[0] == {"id": "1", "name": "a", "score": "0.5"}
    # A sink without a schema does not take rows either.
    assert not SqliteSink(tmp_path / "x.db", "t").accepts_rows
    assert CsvSource(tmp_path / "f.csv", records="dicts").as_rows() is None


async def test_same_table_and_dead_letters_with_rows_and_dicts(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "d").mkdir()
    table, letters = await load(tmp_path / "a", "auto")
    assert (table, letters) == await load(tmp_path / "d", "dicts")
    assert table == [(1, "a", 0.5), (2, "b", 1.5), (5, "", 3.0), (6, "f", 6.0)]
    where = "SqliteSink('DB', table 't')"
    # A row the sink refuses is shown as a dict (column names), a bad line as its text.
    assert letters == [
        (0, f"{where}: no value for key column(s) id", {"id": None, "name": "e", "score": "2"}),
        (
            2,
            f"{where}: IntegrityError: CHECK constraint failed: score >= 0",
            {"id": 4, "name": "d", "score": "-1"},
        ),
        (4, "CSV:4: expected 3 fields, got 2", "3,c"),
    ]


async def test_a_permuted_header_with_a_column_more_and_one_less(tmp_path: Path) -> None:
    text = "name,extra,id\na,x,1\nb,y,2\n"
    (tmp_path / "a").mkdir()
    (tmp_path / "d").mkdir()
    table, letters = await load(tmp_path / "a", "auto", text)
    assert (table, letters) == await load(tmp_path / "d", "dicts", text)
    assert table == [(1, "a", None), (2, "b", None)]
    assert letters == []


async def test_postgres_takes_rows_with_the_same_table_and_dead_letters(
    tmp_path: Path, pg_dsn: str
) -> None:
    schema = {"id": "bigint", "name": "text", "score": "double precision CHECK (score >= 0)"}
    text = "score,id,name,extra\n0.5,1,a,x\n-1,4,d,x\n2,,e,x\n6,6,f,x\n"
    tables = {}
    for records in ("auto", "dicts"):
        seen = Seen(accepts_rows=True)
        csv_path = write(tmp_path / f"{records}.csv", text)
        types = {"id": int, "score": float}
        read = HandlerNode("read", CsvSource(csv_path, batch_size=10, records=records, types=types))
        sink = PostgresSink(pg_dsn, f"t_{records}", key="id", schema=schema)
        assert sink.accepts_rows
        save = HandlerNode("save", sink, [read])
        consumers = [save] if records == "dicts" else [save, HandlerNode("seen", seen, [read])]
        executor = await run_pipeline([read], consumers, timeout=TIMEOUT)
        if records == "auto":
            assert seen.messages and all(type(m) is Rows for m in seen.messages)
        letters = [
            (d.index, d.error_message.replace(f"t_{records}", "T"), d.payload)
            for d in executor.dead_letters
        ]
        rows = await fetch(pg_dsn, f"SELECT * FROM t_{records} ORDER BY id")
        tables[records] = rows, sorted(letters, key=repr)
    assert tables["auto"] == tables["dicts"]
    rows, letters = tables["auto"]
    assert rows == [(1, "a", 0.5), (6, "f", 6.0)]
    assert [(index, payload) for index, _, payload in letters] == [
        (1, {"score": -1.0, "id": 4, "name": "d", "extra": "x"}),
        (2, {"score": 2.0, "id": None, "name": "e", "extra": "x"}),
    ]


async def test_a_keyed_consumer_gets_dicts_and_rows_survive_pickling(tmp_path: Path) -> None:
    keyed = Seen(accepts_rows=True)  # a node routing by key reads fields by name
    read = HandlerNode("read", CsvSource(write(tmp_path / "k.csv"), batch_size=10))
    node = HandlerNode("keyed", keyed, [read], key=lambda message: 0)
    await run_pipeline([read], [node], timeout=TIMEOUT)
    assert keyed.messages and all(type(m) is list for m in keyed.messages)
    rows = Rows([["1", "a"]], ["id", "name"])
    copied = pickle.loads(pickle.dumps(rows))
    assert (type(copied), copied, copied.columns) == (Rows, rows, ("id", "name"))
    assert copied.record(0) == {"id": "1", "name": "a"}
