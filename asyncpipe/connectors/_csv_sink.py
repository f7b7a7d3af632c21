"""Writing CSV files: :class:`CsvSink` appends records under a header it checks."""

from __future__ import annotations

import csv
import io
import operator
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._handler import BaseHandler
from ._csv import check_names
from ._files import AppendingFile
from ._reject import reject_item

__all__ = ["CsvSink"]


class CsvSink(BaseHandler):
    """Append dict records to a CSV file, one flush per batch.

    Messages are lists of records (or a single record). Each record's values are written
    in ``fieldnames`` order (missing fields as empty); a record with fields that are not
    in the header, or that is not a mapping, becomes a dead letter and the rest of the
    batch is written. The columns are ``fieldnames``, else the existing file's header,
    else the keys of the first record written.

    The header is written once, when the file is new or empty; appending to an existing
    file (a restart) keeps its header, and ``fieldnames`` that disagree with it fail the
    node's ``setup()`` naming the file. An incomplete last line left by a crash is cut off
    on open. Writes are flushed before the handler returns (``fsync=True`` also forces
    them to disk). Appending is not idempotent: a replayed batch is written again.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fieldnames: Sequence[str] | None = None,
        encoding: str = "utf-8",
        fsync: bool = False,
        dialect: str | csv.Dialect | type[csv.Dialect] = "excel",
        **fmtparams: Any,
    ) -> None:
        self.path = path
        self.fieldnames = list(fieldnames) if fieldnames else None
        if self.fieldnames is not None:
            check_names(self.fieldnames, f"CsvSink({os.fspath(path)!r}) fieldnames")
        self._dialect = csv.writer(io.StringIO(), dialect, **fmtparams).dialect
        self._reader_dialect = csv.reader([], dialect, **fmtparams).dialect
        self._file = AppendingFile(path, encoding=encoding, fsync=fsync)
        self._columns: list[str] | None = None
        self._getter: Callable[[Any], Any] | None = None

    def __repr__(self) -> str:
        return f"<CsvSink {os.fspath(self.path)!r}>"

    async def setup(self) -> None:
        if self._file.is_open:
            return
        first_line = await self._file.open()
        if first_line is None:
            self._use(self.fieldnames)
            return
        existing = next(csv.reader([first_line], self._reader_dialect), [])
        if self.fieldnames is not None and self.fieldnames != existing:
            await self._file.close()
            raise ValueError(
                f"{os.fspath(self.path)}: existing header {existing} does not match "
                f"fieldnames {self.fieldnames}"
            )
        self._use(existing)

    async def teardown(self) -> None:
        await self._file.close()

    def _use(self, columns: Sequence[str] | None) -> None:
        if columns:
            self._columns = list(columns)
            getter = operator.itemgetter(*columns)
            self._getter = getter if len(columns) > 1 else lambda r: (getter(r),)

    async def handle(self, data: Any) -> None:
        """Append the message's records; return None (a sink emits nothing)."""
        if not self._file.is_open:
            await self.setup()
        records = data if isinstance(data, list | tuple) else [data]
        if not records:
            return None
        if self._columns is None:
            first = records[0]
            if not isinstance(first, Mapping) or not first:
                raise TypeError(
                    f"CsvSink({os.fspath(self.path)!r}) needs fieldnames, or dict records "
                    f"to take them from; got {type(first).__name__}"
                )
            self._use(list(first))
        buffer = io.StringIO()
        writer = csv.writer(buffer, self._dialect)
        writer.writerow(self._columns or ())
        header = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(self._rows(records))
        await self._file.write(buffer.getvalue(), header=header)
        return None

    def _rows(self, records: Sequence[Any]) -> list[Any]:
        columns = self._columns
        assert columns is not None and self._getter is not None
        try:
            # Every record has exactly the columns: all of them written, none left out.
            if set(map(len, records)) == {len(columns)}:
                return list(map(self._getter, records))
        except (KeyError, TypeError):
            pass
        rows = []
        for index, record in enumerate(records):
            if not isinstance(record, Mapping):
                reject_item(record, f"{self._where}: not a dict record", index=index)
                continue
            extra = [k for k in record if k not in columns]
            if extra:
                reject_item(
                    record,
                    f"{self._where}: field(s) {', '.join(map(repr, extra))} not in the "
                    f"header {columns}",
                    index=index,
                )
                continue
            rows.append([record.get(c, "") for c in columns])
        return rows

    @property
    def _where(self) -> str:
        return f"CsvSink({os.fspath(self.path)!r})"
