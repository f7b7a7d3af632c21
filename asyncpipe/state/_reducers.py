"""Aggregations of a window: common reducers and a fold.

A window's accumulator is one flat list; each reducer owns one or more of its slots. The
reducers describe themselves as small pieces of Python source (how a slot starts, how a
record is added, how two accumulators merge, what the result is) that
:class:`Aggregation` compiles, with the window's loop, into one function: per record the
work is a few list operations, without a call per reducer.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Aggregation",
    "Reducer",
    "collect",
    "count",
    "fold",
    "maximum",
    "mean",
    "minimum",
    "total",
]

_names = itertools.count()

#: A record's value: a field name, or a function of the record.
Value = str | Callable[[Any], Any]


@dataclass(frozen=True)
class Reducer:
    """One aggregate of a window, as source fragments over ``a`` (the accumulator), ``r``
    (a record) and ``b`` (another accumulator); ``{0}``, ``{1}`` are its slots. Made by
    :func:`count`, :func:`total`, :func:`minimum`, :func:`maximum`, :func:`mean`,
    :func:`collect` and :func:`fold`."""

    init: tuple[str, ...]
    add: tuple[str, ...]
    result: str
    merge: tuple[str, ...] | None
    env: dict[str, Any] = field(default_factory=dict)


def _value(of: Value | None, env: dict[str, Any]) -> str:
    if of is None:
        return "r"
    if isinstance(of, str):
        return f"r[{of!r}]"
    if not callable(of):
        raise TypeError(f"expected a field name or a function of a record, got {of!r}")
    name = f"_f{next(_names)}"
    env[name] = of
    return f"{name}(r)"


def count() -> Reducer:
    """The number of records."""
    return Reducer(("0",), ("a[{0}] += 1",), "a[{0}]", ("a[{0}] += b[{0}]",))


def total(of: Value) -> Reducer:
    """The sum of a field (or of a function of the record)."""
    env: dict[str, Any] = {}
    return Reducer(
        ("0",), (f"a[{{0}}] += {_value(of, env)}",), "a[{0}]", ("a[{0}] += b[{0}]",), env
    )


def _extreme(of: Value, op: str) -> Reducer:
    env: dict[str, Any] = {}
    add = (f"v = {_value(of, env)}", f"if a[{{0}}] is None or v {op} a[{{0}}]: a[{{0}}] = v")
    merge = (
        f"if a[{{0}}] is None or (b[{{0}}] is not None and b[{{0}}] {op} a[{{0}}]):",
        "    a[{0}] = b[{0}]",
    )
    return Reducer(("None",), add, "a[{0}]", merge, env)


def minimum(of: Value) -> Reducer:
    """The smallest value of a field (or of a function of the record)."""
    return _extreme(of, "<")


def maximum(of: Value) -> Reducer:
    """The largest value of a field (or of a function of the record)."""
    return _extreme(of, ">")


def mean(of: Value) -> Reducer:
    """The arithmetic mean of a field (or of a function of the record)."""
    env: dict[str, Any] = {}
    return Reducer(
        ("0", "0"),
        (f"a[{{0}}] += {_value(of, env)}", "a[{1}] += 1"),
        "a[{0}] / a[{1}]",
        ("a[{0}] += b[{0}]", "a[{1}] += b[{1}]"),
        env,
    )


def collect(of: Value | None = None) -> Reducer:
    """The list of the records (or of a field, or a function of them), in arrival order."""
    env: dict[str, Any] = {}
    return Reducer(
        ("[]",), (f"a[{{0}}].append({_value(of, env)})",), "a[{0}]", ("a[{0}].extend(b[{0}])",), env
    )


def fold(
    initial: Any,
    fn: Callable[[Any, Any], Any],
    merge: Callable[[Any, Any], Any] | None = None,
) -> Reducer:
    """A fold: the value starts as ``initial`` (a function of no arguments, called per
    window, or an immutable value) and becomes ``fn(value, record)`` record by record.
    Session windows merge two values with ``merge(value, other)`` (required there)."""
    n = next(_names)
    env: dict[str, Any] = {f"_fold{n}": fn, f"_init{n}": initial}
    init = f"_init{n}()" if callable(initial) else f"_init{n}"
    merged = None
    if merge is not None:
        env[f"_merge{n}"] = merge
        merged = (f"a[{{0}}] = _merge{n}(a[{{0}}], b[{{0}}])",)
    return Reducer((init,), (f"a[{{0}}] = _fold{n}(a[{{0}}], r)",), "a[{0}]", merged, env)


class Aggregation:
    """Named reducers compiled together: accumulator layout, and the source of adding a
    record, merging and results."""

    def __init__(self, reducers: Mapping[str, Reducer]) -> None:
        if not reducers:
            raise ValueError("a window needs at least one aggregate")
        self.names = list(reducers)
        self.env: dict[str, Any] = {}
        init: list[str] = []
        add: list[str] = []
        merge: list[str] | None = []
        results: list[tuple[str, str]] = []
        for name, reducer in reducers.items():
            if not isinstance(reducer, Reducer):
                raise TypeError(f"aggregate {name!r}: expected a reducer (count(), total(...) ...)")
            slots = [str(len(init) + i) for i in range(len(reducer.init))]
            init.extend(reducer.init)
            add.extend(line.format(*slots) for line in reducer.add)
            results.append((name, reducer.result.format(*slots)))
            if merge is not None and reducer.merge is not None:
                merge.extend(line.format(*slots) for line in reducer.merge)
            else:
                merge = None
            self.env.update(reducer.env)
        #: (output field, expression over ``a``) per reducer.
        self.results = results
        self.init = "[" + ", ".join(init) + "]"
        self.add = add
        self.mergeable = merge is not None
        env = dict(self.env)
        source = [
            "def new():",
            f"    return {self.init}",
            "def add(a, r):",
            *("    " + line for line in add),
        ]
        fields = ", ".join(f"{name!r}: {expr}" for name, expr in results)
        source += ["def result(a):", "    return {" + fields + "}"]
        source += [
            "def merge(a, b):",
            *("    " + line for line in (merge or ["raise TypeError('not mergeable')"])),
        ]
        exec("\n".join(source), env)  # our own fragments; the user's values are passed by name
        self.new: Callable[[], list[Any]] = env["new"]
        self.add_one: Callable[[list[Any], Any], None] = env["add"]
        self.result: Callable[[list[Any]], dict[str, Any]] = env["result"]
        self.merge: Callable[[list[Any], list[Any]], None] = env["merge"]
