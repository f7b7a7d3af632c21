"""Reading CSV files: :class:`CsvSource` (header -> dict records, or rows of values;
``CsvSink`` writes).

Reading is streamed a chunk at a time (see ``_lines``) and parsed a batch at a time.
Well-formed rows are parsed and turned into dicts without a Python loop (``csv.reader``
feeding a generated record builder through ``itertools.starmap``; rows without typed
columns are ``csv.reader``'s lists as they are, their lengths checked); from the first problem
on, the rest of the chunk is parsed row by row, and each bad row becomes a dead letter
naming ``file:line`` and the reason (wrong number of fields, a field its column type
rejects, a csv error) while the other rows flow.

A quote left open at a line end makes the record go on to the next line. That is taken
for a real multi-line record only if, read with ``strict=True`` up to where the field
closes, it is one well-formed row with the header's number of fields within
``max_record_lines`` lines (and the csv field size limit). Otherwise the quote is stray:
its line alone becomes an "unterminated quote" dead letter and parsing resumes at the
next line, so a stray quote costs one line, never the rest of the file, and a record
carried from one chunk to the next never holds more than ``max_record_lines`` lines.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import aclosing
from itertools import islice, starmap
from typing import Any, Literal

from .._rows import Rows
from ._batching import DEFAULT_BATCH_SIZE, BatchingSource, batched
from ._columns import ColumnTypes, ConversionError, Converter, record_builder, row_builder
from ._lines import DEFAULT_CHUNK_SIZE, Segment, check_chunk_size, check_encoding, read_segments
from ._reject import reject_item

__all__ = ["CsvSource", "check_names"]

logger = logging.getLogger(__name__)

#: A record: a dict (column -> value), or as a row the values in column order.
Record = dict[str, Any] | list[Any]

#: Lines one record (a quoted field spanning lines) may take unless told otherwise.
DEFAULT_MAX_RECORD_LINES = 1000


class CsvSource(BatchingSource):
    """Stream a CSV file as lists of up to ``batch_size`` dict records (or rows).

    Args:
        path: the file.
        batch_size: records per emitted message.
        fieldnames: the record keys. By default they come from the header line; given
            together with ``header=True`` they replace the file's header names.
        header: whether the first (non-blank) line is a header. ``header=False`` needs
            ``fieldnames``.
        types: optional column converters, e.g. ``{"id": int, "amount": float}`` (see
            :mod:`asyncpipe.connectors` for the rules); other columns stay strings.
        records: ``"auto"`` (default): dicts, unless every node reading this source's
            node accepts rows of values (:class:`SqliteSink` and :class:`PostgresSink`
            with a ``schema=``): then :class:`~asyncpipe.Rows` messages -- lists of the
            values in the file's column order, carrying the column names once per
            message -- which the sink maps onto its columns (for bulk loads, about a
            third less work per row than dicts; ``docs/performance.md``). Decided when
            the pipeline is wired: a handler of yours downstream gets dicts.
            ``"dicts"``: always dicts, column name -> value. ``"lists"``: always plain
            lists of the values in the file's column order (no names).
        encoding: an ASCII-compatible encoding (default UTF-8; a BOM is skipped).
        chunk_size: bytes read at a time.
        max_record_lines: the most lines one record may span (quoted fields containing
            line breaks); a quote still open beyond that is taken to be stray.
        dialect, **fmtparams: as for :func:`csv.reader` (``delimiter=";"``, ...).

    Blank lines are skipped. A row with the wrong number of fields, a field its type
    rejects, or an unterminated quote becomes a dead letter ``"file:line: reason"``
    whose payload is the row's text (``DeadLetter.index`` is the line number,
    ``DeadLetter.origin`` the path). An unterminated quote costs only the line it opens
    on (see the module docstring). A header with duplicate names, or a quote in it still
    open after ``max_record_lines`` lines, fails the source (``ValueError`` naming
    file:line).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        batch_size: int = DEFAULT_BATCH_SIZE,
        *,
        fieldnames: Sequence[str] | None = None,
        header: bool = True,
        types: Mapping[str, Converter] | None = None,
        encoding: str = "utf-8",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        max_record_lines: int = DEFAULT_MAX_RECORD_LINES,
        dialect: str | csv.Dialect | type[csv.Dialect] = "excel",
        records: Literal["auto", "dicts", "lists"] = "auto",
        **fmtparams: Any,
    ) -> None:
        super().__init__(batch_size)
        if records not in ("auto", "dicts", "lists"):
            raise ValueError(f"records must be 'auto', 'dicts' or 'lists', got {records!r}")
        if (
            not isinstance(max_record_lines, int)
            or isinstance(max_record_lines, bool)
            or max_record_lines < 1
        ):
            raise ValueError(f"max_record_lines must be an integer >= 1, got {max_record_lines!r}")
        if not header and not fieldnames:
            raise ValueError(f"CsvSource({os.fspath(path)!r}): header=False needs fieldnames")
        self.path = path
        self.fieldnames = list(fieldnames) if fieldnames else None
        self.header = header
        self.types = types
        self.encoding = check_encoding(encoding)
        self.chunk_size = check_chunk_size(chunk_size)
        self.max_record_lines = max_record_lines
        self.records = records
        # Validates the format parameters now, rather than at the first read.
        self.dialect = csv.reader([], dialect, **fmtparams).dialect
        ColumnTypes(types)  # validates the converters now
        if self.fieldnames is not None:
            check_names(self.fieldnames, f"CsvSource({os.fspath(path)!r}) fieldnames")

    def __repr__(self) -> str:
        return f"<CsvSource {os.fspath(self.path)!r} batch_size={self.batch_size}>"

    def record_lists(self) -> AsyncGenerator[list[Record], None]:
        return self._parsed(_CsvParser(self, lists=self.records == "lists"))

    def as_rows(self) -> AsyncIterator[Rows] | None:
        """With ``records="auto"``: the file as :class:`~asyncpipe.Rows` messages, which
        the pipeline uses when every consumer accepts rows (see ``asyncpipe._rows``);
        otherwise None."""
        return self._rows() if self.records == "auto" else None

    async def _rows(self) -> AsyncGenerator[Rows, None]:
        parser = _CsvParser(self, lists=True)
        batches = batched(self._parsed(parser), self.batch_size)
        async with aclosing(batches):
            async for batch in batches:
                assert parser.names is not None  # the header is read before any row
                yield Rows(batch, parser.names)

    async def _parsed(self, parser: _CsvParser) -> AsyncGenerator[list[Record], None]:
        segments = read_segments(
            self.path, encoding=self.encoding, chunk_size=self.chunk_size, keepends=True
        )
        async with aclosing(segments):
            async for segment in segments:
                for records in parser.feed(segment):
                    yield records
        for records in parser.finish():
            yield records


def check_names(names: Sequence[str], where: str) -> None:
    seen: set[str] = set()
    duplicates = []
    for name in names:
        if name in seen:
            duplicates.append(name)
        seen.add(name)
    if duplicates:
        raise ValueError(f"{where}: duplicate column name(s) {', '.join(map(repr, duplicates))}")


class _CsvParser:
    """Turns segments of lines into records, carrying a record cut by a chunk end."""

    def __init__(self, source: CsvSource, *, lists: bool) -> None:
        self.where = os.fspath(source.path)
        self.names = source.fieldnames
        self.need_header = source.header
        self.types = ColumnTypes(source.types)
        self.dialect = source.dialect
        self.quotechar = source.dialect.quotechar or ""
        self.quoting = source.dialect.quoting != csv.QUOTE_NONE and bool(self.quotechar)
        self.batch_size = source.batch_size
        self.max_lines = source.max_record_lines
        self.lists = lists
        self.carry: Segment | None = None
        self.build: Callable[..., Record] | None = None
        self.width = 0  # fields per row, set with build
        self.as_read = False  # rows go out as csv.reader makes them (lists, nothing typed)
        if self.names is not None and not self.need_header:
            self.types.bind(self.names, f"{self.where}:1")

    def feed(self, segment: Segment) -> Iterator[list[Record]]:
        """The segment's records, in lists of up to ``batch_size``."""
        first, lines = segment.first_line, segment.lines
        if self.carry is not None:
            carry, self.carry = self.carry, None
            if segment.follows:
                first, lines = carry.first_line, carry.lines + lines
            else:  # an undecodable line cut the carried record short
                yield from self._parse(carry.first_line, carry.lines, final=True)
        yield from self._parse(first, lines, final=False)

    def finish(self) -> Iterator[list[Record]]:
        """The records of a last record carried over (at the end of the file)."""
        carry, self.carry = self.carry, None
        if carry is not None:
            yield from self._parse(carry.first_line, carry.lines, final=True)

    def _parse(self, first: int, lines: list[str], final: bool) -> Iterator[list[Record]]:
        if self.need_header:
            consumed = self._read_header(first, lines, final)
            if consumed is None:
                return
            first, lines = first + consumed, lines[consumed:]
        if not lines:
            return
        build = self.build or self._make_builder()
        # The fast way: parse and build each batch in C. strict=True turns a chunk that
        # ends inside a quoted field (or holds a stray quote) into an error here, so
        # those go the careful way too, as does a batch whose records span so many lines
        # that one of them may be longer than max_record_lines.
        reader = csv.reader(lines, self.dialect, strict=True)
        records: Iterator[Record] = reader if self.as_read else starmap(build, reader)
        while True:
            start = reader.line_num
            try:
                batch = list(islice(records, self.batch_size))
                sound = reader.line_num - start - len(batch) < self.max_lines and (
                    # rows as read: a blank line or a wrong field count shows in a length
                    not self.as_read or all(map(self.width.__eq__, map(len, batch)))
                )
            except Exception:  # a csv error, a blank line, a wrong field count, a bad value
                sound = False
            if not sound:
                slow = self._slow(first + start, lines[start:], final)
                for offset in range(0, len(slow), self.batch_size):
                    yield slow[offset : offset + self.batch_size]
                return
            if not batch:
                return
            yield batch

    def _make_builder(self) -> Callable[..., Record]:
        names = self.names
        assert names is not None
        self.width = len(names)
        build: Callable[..., Record]
        if self.lists:
            build = row_builder(names, self.types)
            self.as_read = all(conv is str for _, _, conv in self.types.positions)
        else:
            build = record_builder(names, self.types)
        self.build = build
        return build

    def _read_header(self, first: int, lines: list[str], final: bool) -> int | None:
        """Read the header; return how many lines it took (None: not complete yet)."""
        reader = csv.reader(lines, self.dialect)
        start = 0
        for row in reader:
            end = reader.line_num
            if not row:
                start = end
                continue
            where = f"{self.where}:{first + start}"
            if end == len(lines) and self._open(lines[start:]):
                if final or end - start >= self.max_lines:
                    raise ValueError(f"{where}: header: unterminated quote")
                self.carry = Segment(first + start, lines[start:])
                return None
            check_names(row, f"{where}: header")
            if self.names is None:
                self.names = row
            elif len(row) != len(self.names):
                logger.warning(
                    "%s: the header has %d columns, fieldnames %d",
                    where,
                    len(row),
                    len(self.names),
                )
            self.types.bind(self.names, where)
            self.need_header = False
            return end
        return None  # only blank lines so far

    def _slow(self, first: int, lines: list[str], final: bool) -> list[Record]:
        """Parse row by row: bad rows become dead letters, a stray quote costs its line."""
        records: list[Record] = []
        start = 0
        while start < len(lines):
            start = self._rows_from(first, lines, start, final, records)
        return records

    def _rows_from(
        self, first: int, lines: list[str], start: int, final: bool, records: list[Record]
    ) -> int:
        """Add the records of ``lines[start:]`` to ``records`` up to a stray quote; return
        the index of the line to go on from (the one after the stray quote, or the end)."""
        names = self.names
        assert names is not None
        # map(), not a slice: resuming after each of many stray quotes stays linear.
        reader = csv.reader(map(lines.__getitem__, range(start, len(lines))), self.dialect)
        end = start
        while True:
            begin = end
            try:
                row: list[Any] = next(reader)
            except StopIteration:
                return len(lines)
            except csv.Error as exc:
                end = start + reader.line_num
                if end - begin > 1:  # a quoted field ran on over line ends past the limit
                    limit = csv.field_size_limit()
                    self._stray(
                        first + begin, lines[begin], f"no closing quote within {limit} characters"
                    )
                    return begin + 1
                self._reject(first + begin, lines[begin:end], str(exc))
                continue
            end = start + reader.line_num
            if end - begin > 1 or (end == len(lines) and self.quoting):
                problem = self._quote_problem(lines[begin:end], first + end - 1, final)
                if problem == "":
                    self.carry = Segment(first + begin, lines[begin:])
                    return len(lines)
                if problem is not None:
                    self._stray(first + begin, lines[begin], problem)
                    return begin + 1
            if len(row) != len(names):
                if row:
                    self._reject(
                        first + begin,
                        lines[begin:end],
                        f"expected {len(names)} fields, got {len(row)}",
                    )
                continue
            try:
                self.types.convert_row(row)
            except ConversionError as exc:
                self._reject(first + begin, lines[begin:end], str(exc))
            else:
                records.append(row if self.lists else dict(zip(names, row, strict=True)))

    def _quote_problem(self, record_lines: list[str], last: int, final: bool) -> str | None:
        """Check a record read over several lines (its last being file line ``last``), or
        the last record of a chunk. Return None if it is sound, "" if it goes on past the
        lines read (to be carried), else why the quote opened on its first line is stray."""
        span = len(record_lines)
        if self._open(record_lines):
            if final:
                return "no closing quote follows"
            if span >= self.max_lines:
                return self._too_long
            return ""
        if span == 1:
            return None
        if span > self.max_lines:
            return self._too_long
        try:
            [row] = csv.reader(record_lines, self.dialect, strict=True)
        except csv.Error as exc:
            return f"read through line {last} as one record: {exc}"
        assert self.names is not None
        if len(row) != len(self.names):
            return (
                f"read through line {last} as one record: {len(row)} fields, "
                f"expected {len(self.names)}"
            )
        return None

    def _open(self, record_lines: list[str]) -> bool:
        """Whether these lines end inside a quoted field (the record continues)."""
        if not self.quoting or not any(self.quotechar in s for s in record_lines):
            return False
        # A line break more is read into the record only if a quoted field is open.
        reader = csv.reader([*record_lines, "\n"], self.dialect)
        try:
            next(reader, None)
        except csv.Error:  # the extra character was one too many for the field
            return True
        return reader.line_num > len(record_lines)

    @property
    def _too_long(self) -> str:
        return f"not closed within {self.max_lines} lines, max_record_lines"

    def _stray(self, line: int, text: str, why: str) -> None:
        self._reject(line, [text], f"unterminated quote ({why})")

    def _reject(self, line: int, record_lines: list[str], reason: str) -> None:
        text = "".join(record_lines).rstrip("\r\n")
        reject_item(text, f"{self.where}:{line}: {reason}", index=line, origin=self.where)
