"""Routes: where each kind of batch goes, and how its items become records.

A :class:`Route` names the producer node a batch's records are submitted to, the
request's repeated field holding the items, and a converter: one protobuf item in, a
record (any object, usually a dict whose keys are a sink's columns) or an
:class:`Invalid` with the reason out. Each item is converted on its own, so one bad item
never costs the others: invalid ones are listed in the reply (index + reason) and
dead-lettered, the rest goes into the pipeline as one message.

The rules are the application's (the bank demo's live in :mod:`asyncpipe.demo.service`);
the framework only bounds what a reason may cost (:func:`quoted`, and the reply's own
limits in :mod:`._replies`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["QUOTED_CHARS", "Converted", "Invalid", "Route", "convert_items", "quoted"]

#: How much of a bad value a reason made by :func:`quoted` shows.
QUOTED_CHARS = 40


@dataclass(frozen=True, slots=True)
class Invalid:
    """What a converter returns for an item it refuses: the reason, which the reply lists
    with the item's index and the dead letter keeps."""

    reason: str


@dataclass(frozen=True, slots=True)
class Route:
    """Where one RPC's batches go: see the module docstring.

    Args:
        node: the producer node the batch's records are submitted to (as one message: a
            list of records).
        items: the name of the request's repeated field holding the items.
        convert: ``item -> record | Invalid(reason)``; it must not raise for bad input
            (an exception is a bug: the call fails ``UNKNOWN``).
        batch_id: the name of the request's string field identifying the batch (echoed in
            the reply, keys the reply on a stream, makes a resend recognisable).
    """

    node: str
    items: str
    convert: Callable[[Any], Any]
    batch_id: str = "batch_id"


@dataclass(slots=True)
class Converted:
    """What became of a batch's items: the valid ones as records, with their position in
    the batch (``indices``), and ``(index, reason)`` for each invalid one."""

    records: list[Any] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    rejections: list[tuple[int, str]] = field(default_factory=list)


def convert_items(convert: Callable[[Any], Any], items: Iterable[Any]) -> Converted:
    """Run ``convert`` on each of ``items``, sorting records from :class:`Invalid` ones."""
    out = Converted()
    records, indices, rejections = out.records, out.indices, out.rejections
    # The hot loop of every request: locals only, one call and one type check per item.
    for index, item in enumerate(items):
        result = convert(item)
        if type(result) is Invalid:
            rejections.append((index, result.reason))
        else:
            records.append(result)
            indices.append(index)
    return out


def quoted(value: str) -> str:
    """``repr(value)``, or of its first :data:`QUOTED_CHARS` characters when longer, then
    ``… (N chars)``: a bad value quoted in a reason without letting it grow the reply."""
    if len(value) <= QUOTED_CHARS:
        return repr(value)
    return f"{value[:QUOTED_CHARS]!r}… ({len(value)} chars)"
