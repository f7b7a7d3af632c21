"""Dead-letter sinks: a `dead_letters` table and a JSON Lines file."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from conn_helpers import TIMEOUT, query, write

from asyncpipe import DeadLetter, DeadLetterSink, HandlerNode, PipelineExecutor, reject
from asyncpipe.connectors import (
    CsvSource,
    JsonLinesDeadLetterSink,
    SqliteDeadLetterSink,
    SqliteSink,
    TextSource,
)
from asyncpipe.testing import run_pipeline


def failing(batch: list[Any]) -> list[Any]:
    raise ValueError(f"cannot handle {len(batch)} records")


async def run_with(sink: DeadLetterSink, csv_path: Path) -> None:
    read = HandlerNode("read", CsvSource(csv_path, types={"n": int}))
    fail = HandlerNode("fail", failing, [read])
    await run_pipeline([read], [fail], timeout=TIMEOUT, dead_letter_sink=sink)


async def test_dead_letters_go_to_a_sqlite_table(tmp_path: Path) -> None:
    csv_path = write(tmp_path / "in.csv", "n\n1\nx\n")
    db = tmp_path / "results.db"
    async with SqliteDeadLetterSink(db) as sink:
        assert isinstance(sink, DeadLetterSink)
        await run_with(sink, csv_path)
    rows = query(
        db,
        "SELECT node, error_type, error_message, payload, attempts, item_index, "
        "traceback IS NOT NULL FROM dead_letters ORDER BY id",
    )
    assert rows == [
        (
            "read",
            "Rejected",
            f"{csv_path}:3: column 'n': cannot convert 'x' with int: "
            "invalid literal for int() with base 10: 'x'",
            '"x"',
            1,
            3,
            0,
        ),
        ("fail", "ValueError", "cannot handle 1 records", '[{"n":1}]', 1, None, 1),
    ]


async def test_the_dead_letter_table_shares_the_database_of_a_sink(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    csv_path = write(tmp_path / "in.csv", "id,n\n1,1\n2,x\n3,3\n")
    read = HandlerNode("read", CsvSource(csv_path, types={"n": int}))
    save = HandlerNode("save", SqliteSink(db, "numbers", key="id"), [read])
    async with SqliteDeadLetterSink(db, table="rejects") as sink:
        await run_pipeline([read], [save], timeout=TIMEOUT, dead_letter_sink=sink)
    assert query(db, "SELECT id, n FROM numbers ORDER BY id") == [("1", 1), ("3", 3)]
    assert query(db, "SELECT item_index FROM rejects") == [(3,)]


async def test_a_sqlite_dead_letter_sink_works_without_async_with(tmp_path: Path) -> None:
    db = tmp_path / "lazy.db"
    sink = SqliteDeadLetterSink(db)
    await sink.write(DeadLetter("n", "E", "m", payload={"k": (1, 2)}, index=0))
    await sink.write(DeadLetter("n", "E", "m2", payload=object()))
    await sink.aclose()
    await sink.aclose()  # idempotent
    payloads = [p for (p,) in query(db, "SELECT payload FROM dead_letters ORDER BY id")]
    assert payloads[0] == '{"k":[1,2]}'
    assert payloads[1].startswith('"<object object at')


async def test_dead_letters_go_to_a_json_lines_file(tmp_path: Path) -> None:
    csv_path = write(tmp_path / "in.csv", "n\n1\n")
    out = tmp_path / "dead.jsonl"
    async with JsonLinesDeadLetterSink(out) as sink:
        await run_with(sink, csv_path)
    # used without async with: each write opens, appends and closes the file
    await JsonLinesDeadLetterSink(out).write(DeadLetter("x", "E", "odd", payload={(1, 2): b"\xff"}))
    letters = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(d["node"], d["error_type"], d["payload"]) for d in letters] == [
        ("fail", "ValueError", [{"n": 1}]),
        ("x", "E", "{(1, 2): b'\\xff'}"),
    ]
    assert "Traceback" in letters[0]["traceback"]
    assert letters[0]["created_at"].endswith("+00:00")


def reject_odd(batch: list[int]) -> list[int]:
    for index, n in enumerate(batch):
        if n % 2:
            reject(n, f"{n} is odd", index=index)
    return [n for n in batch if not n % 2]


def refuse_all(batch: list[int]) -> list[int]:
    raise ValueError(f"refused {batch}")


async def submit_three_times(db: Path, handler: Any, origin: str | None, **options: Any) -> None:
    check = HandlerNode("check", handler, **options)
    async with SqliteDeadLetterSink(db) as sink:
        async with PipelineExecutor([check], dead_letter_sink=sink) as executor:
            for _ in range(3):
                receipt = await executor.submit("check", [1, 2, 3], origin=origin)
                await receipt.wait(TIMEOUT)


async def test_a_batch_sent_again_leaves_one_dead_letter_per_rejected_item(
    tmp_path: Path,
) -> None:
    db = tmp_path / "dead.db"
    await submit_three_times(db, reject_odd, origin="batch-7")
    rows = query(db, "SELECT node, item_index, origin, error_message FROM dead_letters")
    assert sorted(rows) == [
        ("check", 0, "batch-7", "1 is odd"),
        ("check", 2, "batch-7", "3 is odd"),
    ]


async def test_a_failed_message_sent_again_leaves_one_dead_letter(tmp_path: Path) -> None:
    db = tmp_path / "dead.db"
    await submit_three_times(db, refuse_all, origin="batch-8", isolate_failures=False)
    assert query(db, "SELECT node, item_index, origin FROM dead_letters") == [
        ("check", None, "batch-8")
    ]


async def test_without_an_origin_every_dead_letter_is_kept(tmp_path: Path) -> None:
    db = tmp_path / "dead.db"
    await submit_three_times(db, refuse_all, origin=None, isolate_failures=False)
    assert query(db, "SELECT count(*), count(dedupe_key) FROM dead_letters") == [(3, 0)]


async def test_letters_of_one_origin_with_different_payloads_are_all_kept(
    tmp_path: Path,
) -> None:
    # Two messages derived from one input may fail at the same node.
    db = tmp_path / "dead.db"
    async with SqliteDeadLetterSink(db) as sink:
        for payload in ([1], [2], [1]):
            await sink.write(DeadLetter("n", "E", "m", payload=payload, origin="b"))
    assert query(db, "SELECT payload FROM dead_letters ORDER BY id") == [("[1]",), ("[2]",)]


async def test_a_table_from_before_dedupe_gains_its_columns(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "created_at TEXT NOT NULL, node TEXT NOT NULL, error_type TEXT NOT NULL, "
            "error_message TEXT NOT NULL, payload TEXT, traceback TEXT, "
            "attempts INTEGER NOT NULL, item_index INTEGER, receipt_id INTEGER)"
        )
        conn.execute(
            "INSERT INTO dead_letters (created_at, node, error_type, error_message, attempts)"
            " VALUES ('t', 'old', 'E', 'm', 1)"
        )
    conn.close()
    await submit_three_times(db, reject_odd, origin="b")
    assert query(db, "SELECT node, origin FROM dead_letters ORDER BY id") == [
        ("old", None),
        ("check", "b"),
        ("check", "b"),
    ]


async def test_a_csv_file_fed_again_leaves_one_dead_letter_per_bad_line(tmp_path: Path) -> None:
    csv_path = write(tmp_path / "in.csv", "n\n1\nx\n3\ny\n")
    db = tmp_path / "dead.db"
    for _ in range(2):
        async with SqliteDeadLetterSink(db) as sink:
            await run_with(sink, csv_path)
    rows = query(db, "SELECT node, item_index FROM dead_letters WHERE node = 'read'")
    assert sorted(rows) == [("read", 3), ("read", 5)]


async def test_a_text_file_fed_again_leaves_one_dead_letter_per_undecodable_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"good\n\xff bad\nfine\n")
    db = tmp_path / "dead.db"
    for _ in range(2):
        async with SqliteDeadLetterSink(db) as sink:
            read = HandlerNode("read", TextSource(path))
            await run_pipeline([read], [], timeout=TIMEOUT, dead_letter_sink=sink)
    assert query(db, "SELECT node, item_index, origin FROM dead_letters") == [
        ("read", 2, str(path))
    ]
