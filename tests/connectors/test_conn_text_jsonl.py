"""TextSource (lines, delimited TXT), JsonLinesSource/Sink and IterableSource."""

from __future__ import annotations

import datetime
import decimal
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conn_helpers import TIMEOUT, collect, flatten, write

from asyncpipe import HandlerNode, Outcome, PipelineExecutor
from asyncpipe.connectors import IterableSource, JsonLinesSink, JsonLinesSource, TextSource
from asyncpipe.testing import run_pipeline

# -- TextSource -----------------------------------------------------------------------------


async def test_lines_without_their_endings_in_batches(tmp_path: Path) -> None:
    path = write(tmp_path / "l.txt", "one\r\ntwo\n\n  three  \nfour")
    messages, _ = await collect(TextSource(path, batch_size=2))
    assert messages == [["one", "two"], ["  three  ", "four"]]
    messages, _ = await collect(TextSource(path, strip=True, skip_blank=False))
    assert flatten(messages) == ["one", "two", "", "three", "four"]


async def test_delimited_lines_with_names_and_types(tmp_path: Path) -> None:
    path = write(tmp_path / "t.txt", "1|ana|10.5\n2|bob|\n")
    source = TextSource(
        path, delimiter="|", fieldnames=["id", "name", "amount"], types={"amount": float}
    )
    messages, _ = await collect(source)
    assert flatten(messages) == [
        {"id": "1", "name": "ana", "amount": 10.5},
        {"id": "2", "name": "bob", "amount": None},
    ]


async def test_a_header_line_names_the_fields(tmp_path: Path) -> None:
    path = write(tmp_path / "h.txt", "id ; name\n1 ; ana\n")
    messages, _ = await collect(TextSource(path, delimiter=";", header=True, strip=True))
    assert flatten(messages) == [{"id": "1", "name": "ana"}]


async def test_delimited_lines_without_names_are_lists(tmp_path: Path) -> None:
    path = write(tmp_path / "n.txt", "a,b\nc\n")
    messages, _ = await collect(TextSource(path, delimiter=","))
    assert flatten(messages) == [["a", "b"], ["c"]]


async def test_bad_txt_lines_are_dead_letters_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(b"1;ana;1\n2;bob\n3;c\xff;3\n4;dan;x\n5;eve;5\n")
    source = TextSource(path, delimiter=";", fieldnames=["id", "name", "n"], types={"n": int})
    messages, executor = await collect(source)
    assert flatten(messages) == [
        {"id": "1", "name": "ana", "n": 1},
        {"id": "5", "name": "eve", "n": 5},
    ]
    assert [(d.index, d.error_message) for d in executor.dead_letters] == [
        (2, f"{path}:2: expected 3 fields, got 2"),
        (3, f"{path}:3: cannot decode line as utf-8: invalid start byte at byte 3"),
        (
            4,
            f"{path}:4: column 'n': cannot convert 'x' with int: "
            "invalid literal for int() with base 10: 'x'",
        ),
    ]


def test_text_source_refuses_names_without_a_delimiter(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="need a delimiter"):
        TextSource(tmp_path / "x", fieldnames=["a"])
    with pytest.raises(ValueError, match="types need column names"):
        TextSource(tmp_path / "x", delimiter=",", types={"a": int})


# -- JSON Lines ---------------------------------------------------------------------------


async def test_json_lines_records_and_bad_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "r.jsonl", '{"id": 1}\n\n{"id": 2,}\n  \n[1, 2]\n{"id": 3}\n')
    messages, executor = await collect(JsonLinesSource(path, batch_size=2))
    assert messages == [[{"id": 1}, [1, 2]], [{"id": 3}]]
    assert [(d.index, d.error_message, d.payload) for d in executor.dead_letters] == [
        (
            3,
            f"{path}:3: invalid JSON: Expecting property name enclosed in double quotes "
            "(column 10)",
            '{"id": 2,}',
        ),
    ]


async def test_json_lines_round_trip_with_dates_and_decimals(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    records = [
        {"id": 1, "at": datetime.datetime(2024, 5, 1, 12, 30), "amount": decimal.Decimal("1.10")},
        {"id": 2, "name": "ção", "tags": {"x"}},
    ]
    src = HandlerNode("src", IterableSource(records, batch_size=1))
    save = HandlerNode("save", JsonLinesSink(out), [src])
    await run_pipeline([src], [save], timeout=TIMEOUT)
    assert out.read_text(encoding="utf-8").splitlines() == [
        '{"id":1,"at":"2024-05-01T12:30:00","amount":"1.10"}',
        '{"id":2,"name":"ção","tags":["x"]}',
    ]
    messages, _ = await collect(JsonLinesSource(out))
    assert flatten(messages)[1] == {"id": 2, "name": "ção", "tags": ["x"]}


async def test_unencodable_records_are_dead_letters_and_the_rest_is_written(
    tmp_path: Path,
) -> None:
    out = tmp_path / "o.jsonl"
    ingress = HandlerNode("ingress")
    save = HandlerNode("save", JsonLinesSink(out), [ingress])
    async with PipelineExecutor([ingress], [save]) as executor:
        receipt = await executor.submit("ingress", [{"a": 1}, {"b": object()}, {"c": 3}])
        await receipt.wait(TIMEOUT)
        assert out.read_text() == '{"a":1}\n{"c":3}\n'  # flushed before the receipt
    assert receipt.items[Outcome.COMMITTED] == 2 and receipt.items[Outcome.DEAD_LETTERED] == 1
    [letter] = executor.dead_letters
    assert letter.index == 1 and "cannot encode as JSON" in letter.error_message


async def test_json_lines_sink_appends_and_cuts_a_partial_last_line(tmp_path: Path) -> None:
    out = write(tmp_path / "a.jsonl", '{"n":1}\n{"n":')
    async with JsonLinesSink(out) as sink:
        await sink.handle({"n": 2})
    assert out.read_text() == '{"n":1}\n{"n":2}\n'
    assert [json.loads(line) for line in out.read_text().splitlines()] == [{"n": 1}, {"n": 2}]


# -- IterableSource -----------------------------------------------------------------------


async def test_iterable_source_batches_lists_and_async_iterables() -> None:
    messages, _ = await collect(IterableSource(range(5), batch_size=2))
    assert messages == [[0, 1], [2, 3], [4]]

    async def numbers() -> AsyncIterator[int]:
        for n in range(3):
            yield n

    messages, _ = await collect(IterableSource(numbers(), batch_size=2))
    assert messages == [[0, 1], [2]]
    with pytest.raises(TypeError, match="iterable of records"):
        IterableSource("not records")


async def test_sinks_can_force_each_batch_to_disk(tmp_path: Path) -> None:
    out = tmp_path / "durable.jsonl"
    async with JsonLinesSink(out, fsync=True) as sink:
        await sink.handle([{"n": 1}, {"n": 2}])
    assert out.read_text() == '{"n":1}\n{"n":2}\n'
