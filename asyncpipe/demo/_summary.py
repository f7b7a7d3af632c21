"""The demo's closing summary: rows stored, dead letters grouped by kind, global results.

Written to fit the last screen of an 80x24 terminal: one line per dead-letter kind, one
line (or two) per result, the paths last.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from ._database import DEAD_LETTERS, ResultsDatabase

__all__ = [
    "ROUTING",
    "STORED",
    "ReasonGroup",
    "Summary",
    "group_dead_letters",
    "print_summary",
]

#: Sink node -> the results table it commits to (the summary's and the live table's rows).
STORED = {
    "store_clients": "clients",
    "store_scores": "scores",
    "store_transactions": "transactions",
    "store_profiles": "client_profiles",
    "store_metrics": "metrics",
}

#: Nodes that only pick the records of one kind out of a message: not in the live table.
ROUTING = frozenset({"links", "client_rows", "score_rows"})

# A value embedded in a reason: a quoted literal or a number. Replaced by a placeholder,
# 60 "cannot convert '54,78' ..." reasons become one kind of reason.
_LITERAL = re.compile(r"'[^']*'|\"[^\"]*\"|(?<![\w.])\d+(?:[.,]\d+)*(?![\w.])")
PLACEHOLDER = "…"


@dataclass(frozen=True, slots=True)
class ReasonGroup:
    """Dead letters of one kind: same node, error type and reason template."""

    node: str
    error_type: str
    template: str
    count: int
    example: str  # the first reason seen of this kind, values included
    distinct: int  # how many different reasons (values) the kind covers


def reason(message: str) -> str:
    """A dead letter's reason without the file:line or batch prefix."""
    head, sep, rest = message.partition(": ")
    if sep and (":" in head or head.startswith("batch ")):
        return rest
    return message


def template(message: str) -> str:
    """The reason with every embedded value (quoted literal, number) as a placeholder."""
    return _LITERAL.sub(PLACEHOLDER, reason(message))


def group_dead_letters(letters: Iterable[tuple[str, str, str]]) -> list[ReasonGroup]:
    """(node, error type, message) rows grouped by kind, the largest group first."""
    counts: dict[tuple[str, str, str], int] = {}
    examples: dict[tuple[str, str, str], str] = {}
    reasons: dict[tuple[str, str, str], set[str]] = {}
    for node, error_type, message in letters:
        key = (node, error_type, template(message))
        counts[key] = counts.get(key, 0) + 1
        examples.setdefault(key, reason(message))
        reasons.setdefault(key, set()).add(reason(message))
    return sorted(
        (
            ReasonGroup(*key, count, examples[key], len(reasons[key]))
            for key, count in counts.items()
        ),
        key=lambda g: (-g.count, g.node, g.template),
    )


@dataclass(frozen=True, slots=True)
class Summary:
    """What the results database holds after a run."""

    counts: dict[str, int]  # results table -> rows
    groups: list[ReasonGroup]
    dead_letters: int
    results: dict[str, Any]  # the metrics table: name -> value

    @classmethod
    def read(cls, database: ResultsDatabase) -> Summary:
        counts = {table: 0 for table in STORED.values()}
        counts.update(database.counts(STORED.values()))
        letters = [
            (row["node"], row["error_type"], row["error_message"])
            for row in database.rows(DEAD_LETTERS)
        ]
        results = {row["name"]: json.loads(row["value"]) for row in database.rows("metrics")}
        return cls(counts, group_dead_letters(letters), len(letters), results)


def print_summary(console: Console, summary: Summary) -> None:
    """Dead letters by kind, then the global results: a table each, no borders."""
    dead = Table(
        title=f"[bold]dead letters[/] {summary.dead_letters:,} rows of "
        f"{len(summary.groups)} kinds (rows, node, one example of the reason)",
        title_justify="left",
        box=None,
        pad_edge=False,
        show_header=False,
    )
    # Counts and nodes in full; the example gets what is left of the line (rich would
    # shrink every column of an over-long row instead).
    count_width = max((len(f"{g.count:,}") for g in summary.groups), default=1)
    node_width = max((len(g.node) for g in summary.groups), default=1)
    rest = max(10, console.width - count_width - node_width - 4)
    dead.add_column("rows", justify="right", no_wrap=True)
    dead.add_column("node", no_wrap=True)
    dead.add_column("example", no_wrap=True, overflow="ellipsis", max_width=rest)
    for group in summary.groups:
        more = f" (+{group.distinct - 1} more values)" if group.distinct > 1 else ""
        dead.add_row(f"{group.count:,}", group.node, group.example + more)
    console.print(dead)
    scalars = {k: v for k, v in summary.results.items() if not isinstance(v, dict)}
    console.print(
        "[bold]global results[/] "
        + " · ".join(f"{name} {_value(value)}" for name, value in scalars.items())
    )
    results = Table(box=None, pad_edge=False, show_header=False)
    results.add_column("metric", no_wrap=True)
    results.add_column("value", ratio=1)
    for name, value in summary.results.items():
        if name not in scalars:
            results.add_row(name, _value(value))
    console.print(results)


def _value(value: Any) -> str:
    """A result value compact and readable: 1,234 / 12.3M / a · b for a mapping."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value / 1e6:,.1f}M" if abs(value) >= 1e6 else f"{value:,.2f}"
    if isinstance(value, dict):
        parts = []
        for key, item in value.items():
            text = _value(item)
            parts.append(f"{key} ({text})" if isinstance(item, dict) else f"{key} {text}")
        return " · ".join(parts)
    return str(value)
