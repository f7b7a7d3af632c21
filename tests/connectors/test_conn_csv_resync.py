"""CsvSource: a stray (unterminated) quote costs only its own line; quoted fields that
legitimately span lines keep working next to it."""

from __future__ import annotations

import csv
import random
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from conn_helpers import collect, flatten, write

from asyncpipe.connectors import CsvSource

HEADER = "id,name,amount\n"


def _rows(count: int, bad: dict[int, str], newline: str = "\n") -> tuple[str, list[dict[str, str]]]:
    """A CSV text of ``count`` data rows (file lines 2..count+1) and the good records;
    ``bad`` replaces the rows at those file lines."""
    lines = [HEADER.rstrip("\n")]
    good = []
    for line in range(2, count + 2):
        if line in bad:
            lines.append(bad[line])
        else:
            lines.append(f"{line},name{line},{line}.5")
            good.append({"id": str(line), "name": f"name{line}", "amount": f"{line}.5"})
    return newline.join(lines) + newline, good


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("chunk_size", [1 << 18, 4096, 64])
async def test_a_stray_quote_costs_only_its_own_line(
    tmp_path: Path, chunk_size: int, newline: str
) -> None:
    bad = {501: '501,"stray quote,1.5', 900: "900,too,many,fields", 1700: "1700,short"}
    text, good = _rows(2000, bad, newline)
    path = write(tmp_path / "big.csv", text)
    messages, executor = await collect(CsvSource(path, chunk_size=chunk_size))
    assert flatten(messages) == good
    letters = [(d.index, d.error_message, d.payload) for d in executor.dead_letters]
    assert [index for index, _, _ in letters] == [501, 900, 1700]
    _, reason, payload = letters[0]
    assert reason.startswith(f"{path}:501: unterminated quote")
    assert payload == bad[501]
    assert letters[1:] == [
        (900, f"{path}:900: expected 3 fields, got 4", bad[900]),
        (1700, f"{path}:1700: expected 3 fields, got 2", bad[1700]),
    ]


@pytest.mark.parametrize("chunk_size", [1 << 18, 16, 1])
@pytest.mark.parametrize("end", ["\n", "\r\n", ""])
async def test_a_stray_quote_on_the_last_line(tmp_path: Path, chunk_size: int, end: str) -> None:
    path = write(tmp_path / "last.csv", f'id,name,amount\n2,a,1\n3,b,2\n4,"c,3{end}')
    messages, executor = await collect(CsvSource(path, chunk_size=chunk_size))
    assert flatten(messages) == [
        {"id": "2", "name": "a", "amount": "1"},
        {"id": "3", "name": "b", "amount": "2"},
    ]
    assert [(d.index, d.error_message, d.payload) for d in executor.dead_letters] == [
        (4, f"{path}:4: unterminated quote (no closing quote follows)", '4,"c,3')
    ]


async def test_a_quote_inside_an_unquoted_field_is_kept_as_text(tmp_path: Path) -> None:
    path = write(tmp_path / "inch.csv", 'id,name,amount\n2,ab"c,1\n3,12" screen,2\n4,d,3\n')
    messages, executor = await collect(CsvSource(path))
    assert [r["name"] for r in flatten(messages)] == ['ab"c', '12" screen', "d"]
    assert executor.dead_letters == []


@pytest.mark.parametrize("chunk_size", [1 << 18, 64, 7, 1])
async def test_quoted_fields_spanning_lines_still_parse_around_a_stray_quote(
    tmp_path: Path, chunk_size: int
) -> None:
    text = (
        "id,text\r\n"
        '1,"legit\r\nmulti, line"\r\n'  # lines 2-3
        '2,"stray\r\n'  # line 4
        "3,ok\r\n"
        '4,"also\nlegit ""quoted"""\n'  # lines 6-7
        "5,end\r\n"
    )
    path = write(tmp_path / "mixed.csv", text)
    messages, executor = await collect(CsvSource(path, batch_size=2, chunk_size=chunk_size))
    assert flatten(messages) == [
        {"id": "1", "text": "legit\r\nmulti, line"},
        {"id": "3", "text": "ok"},
        {"id": "4", "text": 'also\nlegit "quoted"'},
        {"id": "5", "text": "end"},
    ]
    [letter] = executor.dead_letters
    assert (letter.index, letter.payload) == (4, '2,"stray')
    assert letter.error_message.startswith(f"{path}:4: unterminated quote (read through line 6")


async def test_a_stray_quote_paired_with_a_later_lone_quote_costs_only_its_line(
    tmp_path: Path,
) -> None:
    # Read as one record, lines 3-6 would give 2 fields instead of 3.
    text, _ = _rows(6, {3: '3,"stray,3.5', 6: '6,name6,6.5"'})
    path = write(tmp_path / "pair.csv", text)
    messages, executor = await collect(CsvSource(path))
    assert [r["id"] for r in flatten(messages)] == ["2", "4", "5", "6", "7"]
    why = "read through line 6 as one record: 2 fields, expected 3"
    assert [(d.index, d.error_message) for d in executor.dead_letters] == [
        (3, f"{path}:3: unterminated quote ({why})")
    ]


_PIECES = [
    "{n},a{n},1\n",
    '{n},"b\n{n}x",2\n',  # a legit two-line field
    '{n},"c\r\nd\ne",6\n',  # a legit three-line field, mixed line ends
    '{n},"stray,3\n',
    '{n},12" tv,4\n',
    '{n},x,"q""q"\r\n',
    "{n},too,many,5\n",
    '{n},z",7\n',  # a lone quote closing a field: may pair with a stray quote
    '{n},"",""\n',
    "\n",
]


@pytest.mark.parametrize("max_record_lines", [1000, 3])
async def test_what_a_file_gives_does_not_depend_on_where_chunks_end(
    tmp_path: Path, max_record_lines: int
) -> None:
    rnd = random.Random(20261211)
    path = tmp_path / "mix.csv"
    for _ in range(25):
        count = rnd.randint(0, 30)
        text = "id,name,v\n" + "".join(rnd.choice(_PIECES).format(n=n) for n in range(count))
        path.write_bytes(text.encode())
        outcomes = []
        for chunk_size in (1 << 18, 1, 5, 64):
            source = CsvSource(
                path, batch_size=3, chunk_size=chunk_size, max_record_lines=max_record_lines
            )
            messages, executor = await collect(source)
            letters = [(d.index, d.error_message, d.payload) for d in executor.dead_letters]
            outcomes.append((flatten(messages), letters))
        assert all(outcome == outcomes[0] for outcome in outcomes), text


@pytest.mark.parametrize("chunk_size", [1 << 18, 64])
async def test_a_record_longer_than_max_record_lines_is_a_stray_quote(
    tmp_path: Path, chunk_size: int
) -> None:
    # The quote opened on line 10 closes on line 60 into a well-formed 3-field row that
    # would swallow lines 11-59.
    text, _ = _rows(99, {10: '10,"oops,10.5', 60: '60,name60",60.5'})
    path = write(tmp_path / "long.csv", text)
    messages, executor = await collect(CsvSource(path, chunk_size=chunk_size, max_record_lines=10))
    ids = [int(r["id"]) for r in flatten(messages)]
    assert ids == [n for n in range(2, 101) if n != 10]
    [letter] = executor.dead_letters
    assert letter.index == 10
    assert letter.error_message.startswith(f"{path}:10: unterminated quote")
    assert "max_record_lines" in letter.error_message


async def test_max_record_lines_bounds_legit_multiline_fields(tmp_path: Path) -> None:
    path = write(tmp_path / "three.csv", 'id,text\n1,"a\nb\nc"\n2,d\n')
    messages, _ = await collect(CsvSource(path, max_record_lines=3))
    assert flatten(messages) == [{"id": "1", "text": "a\nb\nc"}, {"id": "2", "text": "d"}]
    messages, executor = await collect(CsvSource(path, max_record_lines=2))
    assert {"id": "2", "text": "d"} in flatten(messages)
    assert [(d.index, d.payload) for d in executor.dead_letters][0] == (2, '1,"a')


async def test_a_stray_quote_near_the_top_of_a_large_file_names_its_line(tmp_path: Path) -> None:
    text, good = _rows(400_000, {12: '12,"no end,1'})
    path = write(tmp_path / "large.csv", text)
    messages, executor = await collect(CsvSource(path, batch_size=5000))
    assert len(flatten(messages)) == len(good)
    [letter] = executor.dead_letters
    assert (letter.index, letter.origin, letter.payload) == (12, str(path), '12,"no end,1')
    assert letter.error_message.startswith(f"{path}:12: unterminated quote (")
    assert "field larger than field limit" not in letter.error_message


async def test_a_stray_quote_past_the_csv_field_size_limit_is_named_as_such(
    tmp_path: Path,
) -> None:
    # ~200 KB after the stray quote: csv's own limit (131072 characters) ends the field.
    text, good = _rows(15_000, {3: '3,"no end,1'})
    path = write(tmp_path / "limit.csv", text)
    source = CsvSource(path, max_record_lines=1_000_000)
    messages, executor = await collect(source)
    assert flatten(messages) == good
    assert [(d.index, d.error_message) for d in executor.dead_letters] == [
        (3, f"{path}:3: unterminated quote (no closing quote within 131072 characters)")
    ]


@pytest.fixture
def unlimited_fields() -> Iterator[None]:
    old = csv.field_size_limit(sys.maxsize)
    try:
        yield
    finally:
        csv.field_size_limit(old)


@pytest.mark.usefixtures("unlimited_fields")
@pytest.mark.parametrize("chunk_size", [4096, 256])
async def test_a_stray_quote_does_not_make_the_reader_hold_the_rest_of_the_file(
    tmp_path: Path, chunk_size: int
) -> None:
    text, good = _rows(20_000, {2: '2,"no end,1'})  # ~420 KB after the stray quote
    path = write(tmp_path / "mem.csv", text)
    source = CsvSource(path, batch_size=100, chunk_size=chunk_size, max_record_lines=50)
    count = 0
    tracemalloc.start()
    try:
        async for batch in source:  # outside a pipeline: nothing keeps the records
            count += len(batch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == len(good)
    assert peak < 1_000_000  # bounded: ~0.2 MB; the rest of the file: ~11 MB


async def test_a_header_whose_quote_never_closes_fails_the_source(tmp_path: Path) -> None:
    path = write(tmp_path / "head.csv", 'id,"name\n1,a\n2,b\n')
    messages, executor = await collect(CsvSource(path))
    assert messages == []
    [letter] = executor.dead_letters
    assert letter.error_type == "ValueError"
    assert f"{path}:1: header: unterminated quote" in letter.error_message


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "3"])
def test_max_record_lines_must_be_a_positive_integer(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ValueError, match="max_record_lines"):
        CsvSource(tmp_path / "x.csv", max_record_lines=bad)  # type: ignore[arg-type]
