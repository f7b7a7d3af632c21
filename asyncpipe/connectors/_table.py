"""What the table sinks (``SqliteSink``, ``PostgresSink``) share: the table, its key and
its declared schema, checked when the sink is made, and a message's records as the sink
takes them (:class:`~asyncpipe.Rows` as they are when it has a schema)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._handler import BaseHandler
from .._rows import Rows

__all__ = ["TableSink"]


class TableSink(BaseHandler):
    """The base of the table sinks: see the module docstring."""

    table: str
    key: tuple[str, ...]
    schema: dict[str, str] | None

    def _declare(
        self,
        table: str,
        key: str | Sequence[str] | None,
        schema: Mapping[str, str] | None,
        quote: Callable[[str], str],
    ) -> None:
        """Set the table, key and schema, refusing names ``quote`` refuses and a key
        outside the schema."""
        quote(table)
        self.table = table
        self.key = (key,) if isinstance(key, str) else tuple(key or ())
        self.schema = dict(schema) if schema else None
        for column in self.key + tuple(self.schema or ()):
            quote(column)
        if self.schema is not None:
            missing = [k for k in self.key if k not in self.schema]
            if missing:
                raise ValueError(f"{self._where}: key column(s) {missing} not in the schema")

    @property
    def accepts_rows(self) -> bool:
        """Whether the sink takes :class:`~asyncpipe.Rows` messages as they are (it has a
        ``schema``); a source with ``records="auto"`` then emits them."""
        return self.schema is not None

    @property
    def _where(self) -> str:
        """The sink, for messages."""
        raise NotImplementedError

    def _as_records(self, data: Any) -> Sequence[Any]:
        """The message's records: dicts, or :class:`~asyncpipe.Rows` when the sink has a
        schema to put them in."""
        records = data if isinstance(data, list | tuple) else [data]
        if isinstance(records, Rows) and self.schema is None:
            return records.dicts()
        return records

    def _check_key(self, fields: Sequence[str]) -> None:
        """Refuse a table whose ``fields`` lack a key column."""
        missing = [k for k in self.key if k not in fields]
        if missing:
            raise ValueError(
                f"{self._where}: key column(s) {missing} are not fields of the records "
                f"(fields: {list(fields)}); declare schema= or fix the key"
            )
