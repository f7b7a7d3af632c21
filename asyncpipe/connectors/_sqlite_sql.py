"""SQL for SQLite writers: quoted names and (multi-row) ``INSERT``/upsert statements."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from itertools import chain
from typing import Any

from .._errors import RecordsRefused

__all__ = ["Insert", "quote", "reorderer"]

#: The record types taken as rows of values in column order (not their subclasses: a
#: named tuple has names of its own, which may not be the columns').
_ROWS = frozenset({list, tuple})


def quote(identifier: str) -> str:
    """Quote an SQL identifier (table or column name)."""
    if not isinstance(identifier, str) or not identifier or "\x00" in identifier:
        raise ValueError(f"not a valid SQL name: {identifier!r}")
    return '"' + identifier.replace('"', '""') + '"'


class Insert:
    """``INSERT`` of rows into a table -- an upsert when there is a key -- as statements
    of any number of rows (``sql(n)``, cached).

    Records are mappings, from which the columns' values are taken, or -- when
    ``positional`` -- also rows: lists or tuples of the values in ``columns`` order
    (``values()``).
    """

    def __init__(
        self,
        table: str,
        columns: Sequence[str],
        key: Sequence[str] = (),
        *,
        positional: bool = False,
    ) -> None:
        self.columns = list(columns)
        self.positional = positional
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
        (not a mapping, a column missing; a row of the wrong length, or a row at all when
        not ``positional``) or has a NULL key. A few passes in C."""
        if records and type(records[0]) in _ROWS and self.positional:
            # Rows are laid end to end as they are -- no lookup, no tuple per record -- if
            # every record is a row of the right length (a mapping would add its keys).
            if not set(map(type, records)) <= _ROWS or not all(
                map(len(self.columns).__eq__, map(len, records))
            ):
                raise RecordsRefused
            values = list(chain.from_iterable(records))
        else:
            try:
                values = list(chain.from_iterable(map(self.row_of, records)))
            except (KeyError, TypeError, IndexError):
                raise RecordsRefused from None
        if self._null_key(values):
            raise RecordsRefused
        return values

    def row(self, record: Any) -> Sequence[Any]:
        """One record's values in ``columns`` order: a row as it is (if ``positional``
        and of the right length), a mapping's values (missing columns as None).
        Raise ``ValueError`` saying why the record cannot be a row."""
        if isinstance(record, Mapping):
            return tuple(record.get(c) for c in self.columns)
        if type(record) in _ROWS and self.positional:
            if len(record) != len(self.columns):
                raise ValueError(
                    f"a row of {len(record)} values, expected {len(self.columns)} "
                    f"({', '.join(self.columns)})"
                )
            row: Sequence[Any] = record
            return row
        if type(record) in _ROWS:
            raise ValueError("a row of values needs the sink's schema= (the column order)")
        raise ValueError(f"not a dict record ({type(record).__name__})")


def _null_key_test(columns: list[str], key: Sequence[str]) -> Callable[[list[Any]], bool]:
    """A test for "some row has a NULL key" on the rows' values laid end to end: a slice
    per key column, searched in C."""
    width = len(columns)
    positions = [columns.index(k) for k in key]
    return lambda values: any(None in values[p::width] for p in positions)


def reorderer(
    given: Sequence[str], columns: Sequence[str]
) -> Callable[[Sequence[Sequence[Any]]], list[Any]] | None:
    """How to turn rows of values in ``given`` column order into rows in ``columns``
    order: None if they already are; otherwise a function making a tuple per row, with
    None for a column ``given`` lacks (as for a dict lacking it) and without the values
    of the columns not in ``columns`` (as for a dict's other fields)."""
    if tuple(given) == tuple(columns):
        return None
    positions = [given.index(c) if c in given else None for c in columns]
    if None in positions:
        return lambda rows: [
            tuple(None if p is None else row[p] for p in positions) for row in rows
        ]
    getter = operator.itemgetter(*positions)
    if len(positions) == 1:
        return lambda rows: [(getter(row),) for row in rows]
    return lambda rows: list(map(getter, rows))
