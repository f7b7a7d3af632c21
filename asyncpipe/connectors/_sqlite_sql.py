"""SQL for SQLite writers: quoted names and (multi-row) ``INSERT``/upsert statements."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from itertools import chain
from typing import Any

from .._errors import RecordsRefused

__all__ = ["Insert", "quote"]


def quote(identifier: str) -> str:
    """Quote an SQL identifier (table or column name)."""
    if not isinstance(identifier, str) or not identifier or "\x00" in identifier:
        raise ValueError(f"not a valid SQL name: {identifier!r}")
    return '"' + identifier.replace('"', '""') + '"'


class Insert:
    """``INSERT`` of rows into a table -- an upsert when there is a key -- as statements
    of any number of rows (``sql(n)``, cached).

    Rows are sequences of values in ``columns`` order, or mappings from which those values
    are taken (``values()``).
    """

    def __init__(self, table: str, columns: Sequence[str], key: Sequence[str] = ()) -> None:
        self.columns = list(columns)
        names = ", ".join(map(quote, self.columns))
        self._head = f"INSERT INTO {quote(table)} ({names}) VALUES "
        self._row = "(" + ", ".join("?" * len(self.columns)) + ")"
        self._tail = ""
        if key:
            conflict = ", ".join(map(quote, key))
            updates = [f"{quote(c)} = excluded.{quote(c)}" for c in self.columns if c not in key]
            action = f"DO UPDATE SET {', '.join(updates)}" if updates else "DO NOTHING"
            self._tail = f" ON CONFLICT ({conflict}) {action}"
        self._statements: dict[int, str] = {}
        getter = operator.itemgetter(*self.columns)
        self.row_of: Callable[[Any], tuple[Any, ...]] = (
            getter if len(self.columns) > 1 else lambda record: (getter(record),)
        )
        self._null_key = _null_key_test(self.columns, key)

    def sql(self, rows: int = 1) -> str:
        """The statement inserting ``rows`` rows (their values flattened, in order)."""
        statement = self._statements.get(rows)
        if statement is None:
            statement = self._head + ", ".join([self._row] * rows) + self._tail
            if len(self._statements) < 8:
                self._statements[rows] = statement
        return statement

    def values(self, records: Sequence[Any]) -> list[Any]:
        """The records' values in ``columns`` order, row after row: the parameters of
        ``sql(len(records))``. Raise :class:`RecordsRefused` if a record cannot be a row
        (not a mapping, a column missing) or has a NULL key. One pass in C."""
        try:
            values = list(chain.from_iterable(map(self.row_of, records)))
        except (KeyError, TypeError, IndexError):
            raise RecordsRefused from None
        if self._null_key(values):
            raise RecordsRefused
        return values


def _null_key_test(columns: list[str], key: Sequence[str]) -> Callable[[list[Any]], bool]:
    """A test for "some row has a NULL key" on the rows' values laid end to end: a slice
    per key column, searched in C."""
    width = len(columns)
    positions = [columns.index(k) for k in key]
    return lambda values: any(None in values[p::width] for p in positions)
