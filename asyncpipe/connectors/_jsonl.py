"""JSON Lines files: :class:`JsonLinesSource` and :class:`JsonLinesSink` (append)."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any

from .._handler import BaseHandler
from ._batching import DEFAULT_BATCH_SIZE, BatchingSource
from ._files import AppendingFile
from ._json import dumps
from ._lines import DEFAULT_CHUNK_SIZE, check_chunk_size, check_encoding, read_segments
from ._reject import reject_item

__all__ = ["JsonLinesSink", "JsonLinesSource"]


class JsonLinesSource(BatchingSource):
    """Stream a JSON Lines file (one JSON document per line) as lists of up to
    ``batch_size`` records.

    A record is whatever the line holds, usually an object (a dict). Blank lines are
    skipped. A line that is not valid JSON, or not decodable, becomes a dead letter
    ``"file:line: invalid JSON: reason (column c)"`` whose payload is the line
    (``DeadLetter.index`` is the line number); the rest of the file goes on.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        batch_size: int = DEFAULT_BATCH_SIZE,
        *,
        encoding: str = "utf-8",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        super().__init__(batch_size)
        self.path = path
        self.encoding = check_encoding(encoding)
        self.chunk_size = check_chunk_size(chunk_size)

    def __repr__(self) -> str:
        return f"<JsonLinesSource {os.fspath(self.path)!r} batch_size={self.batch_size}>"

    async def record_lists(self) -> AsyncGenerator[list[Any], None]:
        where = os.fspath(self.path)
        loads = json.loads
        segments = read_segments(self.path, encoding=self.encoding, chunk_size=self.chunk_size)
        async with aclosing(segments):
            async for segment in segments:
                try:
                    records = list(map(loads, filter(None, segment.lines)))
                except ValueError:  # JSONDecodeError, or a blank line of spaces
                    records = _parse_each(where, segment.first_line, segment.lines)
                if records:
                    yield records


def _parse_each(where: str, first: int, lines: list[str]) -> list[Any]:
    records = []
    for offset, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            number = first + offset
            reason = f"{where}:{number}: invalid JSON: {exc.msg} (column {exc.colno})"
            reject_item(line, reason, index=number, origin=where)
    return records


class JsonLinesSink(BaseHandler):
    """Append records to a JSON Lines file, one flush per batch.

    A list (or tuple) message writes one line per item; any other message one line.
    Dates and times are written in ISO 8601, ``Decimal`` as a string, sets as lists, bytes
    as text (see ``json_default``); a record that still cannot be encoded becomes a dead
    letter and the rest of the batch is written. ``fsync=True`` forces each batch to disk.
    An incomplete last line left by a crash is cut off on open. Appending is not
    idempotent: a replayed batch is written again.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, encoding: str = "utf-8", fsync: bool = False
    ) -> None:
        self.path = path
        self._file = AppendingFile(path, encoding=encoding, fsync=fsync)

    def __repr__(self) -> str:
        return f"<JsonLinesSink {os.fspath(self.path)!r}>"

    async def setup(self) -> None:
        if not self._file.is_open:
            await self._file.open()

    async def teardown(self) -> None:
        await self._file.close()

    async def handle(self, data: Any) -> None:
        """Append the message's records; return None (a sink emits nothing)."""
        if not self._file.is_open:
            await self.setup()
        records = data if isinstance(data, list | tuple) else [data]
        if not records:
            return None
        await self._file.write(self._encode(records))
        return None

    def _encode(self, records: Sequence[Any]) -> str:
        try:
            return "\n".join(map(dumps, records)) + "\n"
        except (TypeError, ValueError):
            pass
        lines = []
        for index, record in enumerate(records):
            try:
                lines.append(dumps(record) + "\n")
            except (TypeError, ValueError, RecursionError) as exc:
                where = f"JsonLinesSink({os.fspath(self.path)!r})"
                reject_item(record, f"{where}: cannot encode as JSON: {exc}", index=index)
        return "".join(lines)
