"""Text files: :class:`TextSource`, lines as strings or delimited TXT records."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing
from itertools import repeat, starmap
from typing import Any

from ._batching import DEFAULT_BATCH_SIZE, BatchingSource
from ._columns import ColumnTypes, ConversionError, Converter, record_builder
from ._lines import DEFAULT_CHUNK_SIZE, check_chunk_size, check_encoding, read_segments
from ._reject import reject_item

__all__ = ["TextSource"]


class TextSource(BatchingSource):
    """Stream a text file as lists of up to ``batch_size`` records, one per line.

    Without ``delimiter`` a record is the line's text (without its line ending). With
    ``delimiter`` (the original's TXT files, e.g. ``"|"`` or ``";"``) the line is split on it
    -- plainly, no quoting (use :class:`CsvSource` for that) -- and the record is a dict
    when there are names (``fieldnames``, or the first line with ``header=True``), else
    the list of fields. ``types`` converts named columns as for :class:`CsvSource`.

    Args:
        strip: strip surrounding whitespace from each line, and from each field.
        skip_blank: skip empty lines (after stripping).

    A delimited line with the wrong number of fields, a field its type rejects, or an
    undecodable line becomes a dead letter ``"file:line: reason"`` whose payload is the
    line (``DeadLetter.index`` is the line number); the rest of the file goes on.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        batch_size: int = DEFAULT_BATCH_SIZE,
        *,
        delimiter: str | None = None,
        fieldnames: Sequence[str] | None = None,
        header: bool = False,
        types: Mapping[str, Converter] | None = None,
        strip: bool = False,
        skip_blank: bool = True,
        encoding: str = "utf-8",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        super().__init__(batch_size)
        where = f"TextSource({os.fspath(path)!r})"
        if delimiter is None and (fieldnames or header or types):
            raise ValueError(f"{where}: fieldnames, header and types need a delimiter")
        if delimiter == "":
            raise ValueError(f"{where}: delimiter must not be empty")
        if types and not (fieldnames or header):
            raise ValueError(f"{where}: types need column names (fieldnames or header=True)")
        self.path = path
        self.delimiter = delimiter
        self.fieldnames = list(fieldnames) if fieldnames else None
        self.header = header
        self.types = types
        self.strip = strip
        self.skip_blank = skip_blank
        self.encoding = check_encoding(encoding)
        self.chunk_size = check_chunk_size(chunk_size)
        ColumnTypes(types)  # validates the converters now

    def __repr__(self) -> str:
        return f"<TextSource {os.fspath(self.path)!r} batch_size={self.batch_size}>"

    async def record_lists(self) -> AsyncGenerator[list[Any], None]:
        parser = _TextParser(self)
        segments = read_segments(self.path, encoding=self.encoding, chunk_size=self.chunk_size)
        async with aclosing(segments):
            async for segment in segments:
                records = parser.parse(segment.first_line, segment.lines)
                if records:
                    yield records


class _TextParser:
    def __init__(self, source: TextSource) -> None:
        self.where = os.fspath(source.path)
        self.delimiter = source.delimiter
        self.names = source.fieldnames
        self.need_header = source.header
        self.types = ColumnTypes(source.types)
        self.strip = source.strip
        self.skip_blank = source.skip_blank
        self.build: Callable[..., dict[str, Any]] | None = None
        if self.names is not None and not self.need_header:
            self.types.bind(self.names, f"{self.where}:1")

    def parse(self, first: int, lines: list[str]) -> list[Any]:
        if self.strip:
            lines = list(map(str.strip, lines))
        if self.need_header:
            consumed = self._read_header(first, lines)
            first, lines = first + consumed, lines[consumed:]
        if self.delimiter is None:
            return list(filter(None, lines)) if self.skip_blank else lines
        fast = self._fast(lines)
        return fast if fast is not None else self._slow(first, lines)

    def _split(self, line: str) -> list[Any]:
        fields: list[Any] = line.split(self.delimiter)
        return list(map(str.strip, fields)) if self.strip else fields

    def _read_header(self, first: int, lines: list[str]) -> int:
        for offset, line in enumerate(lines):
            if not line:
                continue
            names = self._split(line)
            where = f"{self.where}:{first + offset}"
            if len(set(names)) != len(names):
                raise ValueError(f"{where}: duplicate column names in header {names}")
            if self.names is None:
                self.names = names
            self.types.bind(self.names, where)
            self.need_header = False
            return offset + 1
        return len(lines)

    def _fast(self, lines: list[str]) -> list[Any] | None:
        """Split and build a chunk's records in C; None if it needs `_slow`."""
        if self.skip_blank:
            lines = list(filter(None, lines))
        rows: Any = map(str.split, lines, repeat(self.delimiter))
        if self.strip:
            rows = ([s.strip() for s in row] for row in rows)
        if self.names is None:
            return list(rows)
        if self.build is None:
            self.build = record_builder(self.names, self.types)
        try:
            return list(starmap(self.build, rows))
        except Exception:  # a wrong field count or a bad value
            return None

    def _slow(self, first: int, lines: list[str]) -> list[Any]:
        names = self.names
        assert names is not None
        records: list[Any] = []
        for offset, line in enumerate(lines):
            if not line and self.skip_blank:
                continue
            number = first + offset
            row = self._split(line)
            if len(row) != len(names):
                reason = f"expected {len(names)} fields, got {len(row)}"
                reject_item(
                    line, f"{self.where}:{number}: {reason}", index=number, origin=self.where
                )
                continue
            try:
                self.types.convert_row(row)
            except ConversionError as exc:
                reject_item(line, f"{self.where}:{number}: {exc}", index=number, origin=self.where)
                continue
            records.append(dict(zip(names, row, strict=True)))
        return records
