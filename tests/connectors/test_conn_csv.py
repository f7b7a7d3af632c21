"""CsvSource and CsvSink: records, types, malformed rows, chunk boundaries, appending."""

from __future__ import annotations

import csv
import datetime
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conn_helpers import TIMEOUT, collect, flatten, write

from asyncpipe import HandlerError, HandlerNode, Outcome, PipelineExecutor
from asyncpipe.connectors import CsvSink, CsvSource, IterableSource
from asyncpipe.testing import run_pipeline


async def test_rows_become_dict_records_in_batches(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "id,name\n1,ana\n2,bob\n3,caio\n4,davi\n5,eva\n")
    messages, executor = await collect(CsvSource(path, batch_size=2))
    assert messages == [
        [{"id": "1", "name": "ana"}, {"id": "2", "name": "bob"}],
        [{"id": "3", "name": "caio"}, {"id": "4", "name": "davi"}],
        [{"id": "5", "name": "eva"}],
    ]
    assert executor.dead_letters == []


async def test_typed_columns_are_converted_and_empty_fields_become_none(tmp_path: Path) -> None:
    path = write(
        tmp_path / "t.csv",
        "id,amount,vip,day,note\n1,2.5,yes,2024-01-31,x\n2,,false,,\n",
    )
    types: dict[str, Callable[[str], Any]] = {
        "id": int,
        "amount": float,
        "vip": bool,
        "day": datetime.date.fromisoformat,
    }
    messages, _ = await collect(CsvSource(path, types={**types, "note": str}))
    assert flatten(messages) == [
        {"id": 1, "amount": 2.5, "vip": True, "day": datetime.date(2024, 1, 31), "note": "x"},
        {"id": 2, "amount": None, "vip": False, "day": None, "note": ""},
    ]


async def test_malformed_rows_are_dead_letters_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(
        b"id,amount\n1,1.0\n2,3.0,extra\n3,abc\n4,caf\xe9\n5,5.0\n"
    )  # line 5 is Latin-1, not UTF-8
    messages, executor = await collect(CsvSource(path, types={"amount": float}))
    assert flatten(messages) == [{"id": "1", "amount": 1.0}, {"id": "5", "amount": 5.0}]
    letters = [(d.node, d.index, d.error_message, d.payload) for d in executor.dead_letters]
    where = str(path)
    assert letters == [
        ("source", 3, f"{where}:3: expected 2 fields, got 3", "2,3.0,extra"),
        (
            "source",
            4,
            f"{where}:4: column 'amount': cannot convert 'abc' with float: "
            "could not convert string to float: 'abc'",
            "3,abc",
        ),
        (
            "source",
            5,
            f"{where}:5: cannot decode line as utf-8: unexpected end of data at byte 5",
            b"4,caf\xe9",
        ),
    ]
    assert executor.metrics().nodes["source"].dead_letters == 3


async def test_quoted_fields_spanning_lines_survive_any_chunk_boundary(tmp_path: Path) -> None:
    rows = [
        ["id", "text"],
        ["1", "plain"],
        ["2", 'two\nlines, "quoted"'],
        ["3", "three\r\nline\nfield"],
        ["4", ""],
        ["5", "end"],
    ]
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    path = write(tmp_path / "q.csv", buffer.getvalue())
    expected = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    for chunk_size in (1, 3, 7, 16, 64, 1 << 20):
        messages, executor = await collect(CsvSource(path, batch_size=2, chunk_size=chunk_size))
        assert flatten(messages) == expected, chunk_size
        assert executor.dead_letters == []


async def test_line_numbers_count_the_lines_of_multiline_records(tmp_path: Path) -> None:
    path = write(tmp_path / "n.csv", 'id,text\n1,"a\nb\nc"\n2,x,y\n')
    _, executor = await collect(CsvSource(path, chunk_size=8))
    assert [d.error_message for d in executor.dead_letters] == [
        f"{path}:5: expected 2 fields, got 3"
    ]


async def test_an_unterminated_quote_is_a_dead_letter_of_its_line_alone(tmp_path: Path) -> None:
    path = write(tmp_path / "u.csv", 'id,text\n1,ok\n2,"never closed\n3,more\n')
    messages, executor = await collect(CsvSource(path))
    assert flatten(messages) == [{"id": "1", "text": "ok"}, {"id": "3", "text": "more"}]
    assert [(d.error_message, d.payload, d.origin) for d in executor.dead_letters] == [
        (f"{path}:3: unterminated quote (no closing quote follows)", '2,"never closed', str(path))
    ]


async def test_blank_lines_and_a_bom_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_bytes(b"\xef\xbb\xbfid,name\r\n\r\n1,ana\r\n\r\n2,bob\r\n\r\n")
    messages, executor = await collect(CsvSource(path))
    assert flatten(messages) == [{"id": "1", "name": "ana"}, {"id": "2", "name": "bob"}]
    assert executor.dead_letters == []


async def test_fieldnames_without_a_header_line_and_another_delimiter(tmp_path: Path) -> None:
    path = write(tmp_path / "h.csv", "1;ana\n2;bob\n")
    source = CsvSource(path, header=False, fieldnames=["id", "name"], delimiter=";")
    messages, _ = await collect(source)
    assert flatten(messages) == [{"id": "1", "name": "ana"}, {"id": "2", "name": "bob"}]


async def test_fieldnames_replace_the_header_names(tmp_path: Path) -> None:
    path = write(tmp_path / "r.csv", "ID,NOME\n1,ana\n")
    messages, _ = await collect(CsvSource(path, fieldnames=["id", "name"]))
    assert flatten(messages) == [{"id": "1", "name": "ana"}]


async def test_an_empty_file_emits_nothing(tmp_path: Path) -> None:
    messages, executor = await collect(CsvSource(write(tmp_path / "e.csv", "")))
    assert messages == [] and executor.dead_letters == []


async def test_a_duplicate_header_fails_the_source_naming_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", "\nid,id\n1,2\n")
    messages, executor = await collect(CsvSource(path))
    assert messages == []
    [letter] = executor.dead_letters
    assert letter.error_type == "ValueError"
    assert f"{path}:2: header: duplicate column name(s) 'id'" in letter.error_message


async def test_a_missing_file_fails_the_source_naming_it(tmp_path: Path) -> None:
    _, executor = await collect(CsvSource(tmp_path / "missing.csv"))
    [letter] = executor.dead_letters
    assert letter.error_type == "FileNotFoundError"
    assert "missing.csv" in letter.error_message


def test_bad_arguments_are_refused_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="header=False needs fieldnames"):
        CsvSource(tmp_path / "x.csv", header=False)
    with pytest.raises(ValueError, match="batch_size"):
        CsvSource(tmp_path / "x.csv", batch_size=0)
    with pytest.raises(ValueError, match="chunk_size"):
        CsvSource(tmp_path / "x.csv", chunk_size=0)
    with pytest.raises(ValueError, match="not supported"):
        CsvSource(tmp_path / "x.csv", encoding="utf-16")
    with pytest.raises(TypeError, match="types"):
        CsvSource(tmp_path / "x.csv", types={"a": 3})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        CsvSource(tmp_path / "x.csv", nonsense=True)


async def test_iterated_outside_a_pipeline_bad_rows_are_logged_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "o.csv", "a,b\n1,2\n3\n")
    with caplog.at_level(logging.WARNING, logger="asyncpipe.connectors"):
        batches = [batch async for batch in CsvSource(path)]
    assert batches == [[{"a": "1", "b": "2"}]]
    assert f"{path}:3: expected 2 fields, got 1" in caplog.text


# -- CsvSink --------------------------------------------------------------------------------


async def test_csv_round_trip_through_the_sink(tmp_path: Path) -> None:
    source_path = write(tmp_path / "in.csv", 'id,name\n1,ana\n2,"b, o""b"\n3,caio\n')
    out_path = tmp_path / "out.csv"
    read = HandlerNode("read", CsvSource(source_path, batch_size=2))
    save = HandlerNode("save", CsvSink(out_path), [read])
    await run_pipeline([read], [save], timeout=TIMEOUT)
    assert out_path.read_bytes() == source_path.read_bytes().replace(b"\n", b"\r\n")
    messages, _ = await collect(CsvSource(out_path))
    assert flatten(messages) == [
        {"id": "1", "name": "ana"},
        {"id": "2", "name": 'b, o"b'},
        {"id": "3", "name": "caio"},
    ]


async def test_appending_across_restarts_writes_the_header_once(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    for run in range(3):
        records = [{"run": run, "n": n} for n in range(2)]
        src = HandlerNode("src", IterableSource(records, batch_size=1))
        save = HandlerNode("save", CsvSink(path, fieldnames=["run", "n"]), [src])
        await run_pipeline([src], [save], timeout=TIMEOUT)
    lines = path.read_bytes().decode().splitlines()
    assert lines == ["run,n"] + [f"{r},{n}" for r in range(3) for n in range(2)]


async def test_the_header_of_an_existing_file_is_reused(tmp_path: Path) -> None:
    path = write(tmp_path / "old.csv", "b,a\r\n1,2\r\n")
    async with CsvSink(path) as sink:
        await sink.handle([{"a": "x", "b": "y"}])
    assert path.read_bytes() == b"b,a\r\n1,2\r\ny,x\r\n"


async def test_fieldnames_that_disagree_with_the_existing_header_fail_setup(
    tmp_path: Path,
) -> None:
    path = write(tmp_path / "old.csv", "b,a\r\n1,2\r\n")
    src = HandlerNode("src", [[{"a": 1, "b": 2}]])
    save = HandlerNode("save", CsvSink(path, fieldnames=["a", "b"]), [src])
    with pytest.raises(HandlerError, match="does not match fieldnames"):
        await run_pipeline([src], [save], timeout=TIMEOUT)


async def test_an_incomplete_last_line_from_a_crash_is_cut_off(tmp_path: Path) -> None:
    path = write(tmp_path / "crash.csv", "id,name\r\n1,ana\r\n2,bo")
    async with CsvSink(path) as sink:
        await sink.handle([{"id": 2, "name": "bob"}])
    assert path.read_bytes() == b"id,name\r\n1,ana\r\n2,bob\r\n"


async def test_records_the_header_cannot_hold_are_dead_letters(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    batch = [{"id": 1, "name": "a"}, {"id": 2, "name": "b", "extra": 1}, "oops", {"id": 3}]
    ingress = HandlerNode("ingress")
    save = HandlerNode("save", CsvSink(path), [ingress])
    async with PipelineExecutor([ingress], [save]) as executor:
        receipt = await executor.submit("ingress", batch)
        await receipt.wait(TIMEOUT)
        # flushed before the receipt resolved
        assert path.read_bytes() == b"id,name\r\n1,a\r\n3,\r\n"
    assert receipt.items[Outcome.COMMITTED] == 2
    assert receipt.items[Outcome.DEAD_LETTERED] == 2
    assert [(d.index, d.error_message) for d in executor.dead_letters] == [
        (1, f"CsvSink({str(path)!r}): field(s) 'extra' not in the header ['id', 'name']"),
        (2, f"CsvSink({str(path)!r}): not a dict record"),
    ]
