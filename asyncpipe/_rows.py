"""Rows of values: a message form that skips a dict per record where the consumer knows
its columns.

A source that can emit either form (``CsvSource(records="auto")``, its default) offers
``as_rows()``: an async iterator of :class:`Rows` messages, or None. A handler that can
take them says so with ``accepts_rows = True`` (``SqliteSink`` and ``PostgresSink`` given a
``schema=``). When the graph is wired, a source node whose every consumer accepts rows is
fed from ``as_rows()``; any other consumer (a plain function, a node passing messages on,
a node chunking or keying its messages) and the source emits dicts as usual, so no
handler ever receives rows it did not ask for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

__all__ = ["Rows", "accepts_rows", "record_at", "rows_factory"]


class Rows(list[Any]):
    """A message of records as rows of values (lists), all in the order of ``columns``:
    the column names are carried once per message, not once per record."""

    __slots__ = ("columns",)

    def __init__(self, rows: Iterable[Any] = (), columns: Sequence[str] = ()) -> None:
        super().__init__(rows)
        self.columns: tuple[str, ...] = tuple(columns)

    def record(self, index: int) -> dict[str, Any]:
        """Record ``index`` as a dict (column name -> value), e.g. for a dead letter."""
        return dict(zip(self.columns, self[index], strict=False))

    def dicts(self) -> list[dict[str, Any]]:
        """Every record as a dict."""
        return list(map(self.record, range(len(self))))


def record_at(records: Sequence[Any], index: int) -> Any:
    """Record ``index`` of a message as a dead letter shows it: a row of :class:`Rows` as
    a dict, anything else as it is."""
    return records.record(index) if isinstance(records, Rows) else records[index]


def accepts_rows(node: Any) -> bool:
    """Whether a (non-source) node may be sent :class:`Rows` messages: its handler says
    so, and the node hands each message to it whole (no chunks, no key, no state)."""
    handler = node.handler
    return (
        handler is not None
        and getattr(handler.obj, "accepts_rows", False) is True
        and not node.parallel
        and node.key is None
        and node.stateful is None
    )


def rows_factory(source: Any, consumers: Sequence[Any]) -> Callable[[], AsyncIterator[Any]] | None:
    """The factory of a source node's row messages if the source offers them and every
    consumer accepts them; None otherwise (the source's usual messages)."""
    as_rows = getattr(source, "as_rows", None)
    if not callable(as_rows) or not consumers or not all(map(accepts_rows, consumers)):
        return None
    if as_rows() is None:  # the source was told which form to emit
        return None
    factory: Callable[[], AsyncIterator[Any]] = as_rows
    return factory
