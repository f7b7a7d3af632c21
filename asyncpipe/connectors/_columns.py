"""Typed columns: turning the text fields of CSV and delimited TXT records into values.

A source given ``types={"amount": float, "day": date.fromisoformat}`` converts those
columns with the callables. Rules, the same for every text source:

* a converter is any callable taking the field's text (``int``, ``float``,
  ``decimal.Decimal``, ``datetime.date.fromisoformat``, your own function);
* ``bool`` is read as a word: ``true/false``, ``t/f``, ``yes/no``, ``y/n``, ``on/off``,
  ``1/0`` (any case), not Python's ``bool(str)`` (which is true for ``"false"``);
* an empty field in a typed column becomes ``None`` (SQL ``NULL``), except for ``str``;
* a field the converter rejects (raises, e.g. ``ValueError`` or
  ``decimal.InvalidOperation``) makes the whole record a dead letter naming the file,
  line, column and value; the rest of the file goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._errors import ConversionError

__all__ = [
    "ColumnTypes",
    "ConversionError",
    "Converter",
    "parse_bool",
    "record_builder",
    "row_builder",
]

Converter = Callable[[str], Any]

_TRUE = frozenset({"true", "t", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "off", "0"})


def parse_bool(text: str) -> bool:
    """Read a boolean word (see the module docstring); raise ``ValueError`` otherwise."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"not a boolean: {text!r}")


class ColumnTypes:
    """The converters of a source, resolved against the column names once known."""

    def __init__(self, types: Mapping[str, Converter] | None) -> None:
        self.by_name: dict[str, Converter] = {}
        for column, converter in (types or {}).items():
            if not callable(converter):
                raise TypeError(
                    f"types[{column!r}] must be a callable taking the field's text, "
                    f"got {converter!r}"
                )
            self.by_name[column] = parse_bool if converter is bool else converter
        #: (position, name, converter) of each typed column, set by :meth:`bind`.
        self.positions: list[tuple[int, str, Converter]] = []

    def __bool__(self) -> bool:
        return bool(self.by_name)

    def bind(self, names: Sequence[str], where: str) -> None:
        """Resolve the typed columns against the record's column names.

        Raises ``ValueError`` naming ``where`` (file:line) for a typed column that is not
        among the names.
        """
        missing = [c for c in self.by_name if c not in names]
        if missing:
            raise ValueError(
                f"{where}: typed column(s) {', '.join(map(repr, missing))} not in the "
                f"columns {list(names)}"
            )
        self.positions = [(names.index(c), c, conv) for c, conv in self.by_name.items()]

    def convert_row(self, row: list[Any]) -> None:
        """Convert one row in place; raise :class:`ConversionError` for a bad field."""
        for position, name, converter in self.positions:
            value = row[position]
            if value == "" and converter is not str:
                row[position] = None
                continue
            try:
                row[position] = converter(value)
            except Exception as exc:
                raise ConversionError(name, value, converter, exc) from exc


def record_builder(names: Sequence[str], types: ColumnTypes) -> Callable[..., dict[str, Any]]:
    """A function taking a row's fields as arguments and returning its dict record, with
    the typed columns converted (empty fields -> None).

    It is generated code (like ``collections.namedtuple``): a dict display with constant
    keys is about twice as fast as ``dict(zip(names, row))``, and ``itertools.starmap``
    over it keeps the whole parse loop in C. Called with the wrong number of fields it
    raises ``TypeError``; a converter's error propagates. Callers then take the per-row
    path, which names the line and the problem.
    """
    fields, namespace = _fields(names, types)
    items = ", ".join(f"{name!r}: {field}" for name, field in zip(names, fields, strict=True))
    return _compile(len(names), f"{{{items}}}", namespace)


def row_builder(names: Sequence[str], types: ColumnTypes) -> Callable[..., list[Any]]:
    """As :func:`record_builder`, but returning the row as a list of the field values
    in column order (``names`` serve to place the converters)."""
    fields, namespace = _fields(names, types)
    return _compile(len(names), f"[{', '.join(fields)}]", namespace)


def _fields(names: Sequence[str], types: ColumnTypes) -> tuple[list[str], dict[str, Any]]:
    """The expression of each field of a generated builder, and the converters it uses."""
    converters = {name: conv for _, name, conv in types.positions if conv is not str}
    namespace: dict[str, Any] = {}
    fields = []
    for i, name in enumerate(names):
        if name in converters:
            namespace[f"c{i}"] = converters[name]
            fields.append(f"c{i}(_{i}) if _{i} else None")
        else:
            fields.append(f"_{i}")
    return fields, namespace


def _compile(width: int, display: str, namespace: dict[str, Any]) -> Callable[..., Any]:
    params = ", ".join(f"_{i}" for i in range(width))
    builder: Callable[..., Any] = eval(f"lambda {params}: {display}", namespace)  # names via !r
    return builder
