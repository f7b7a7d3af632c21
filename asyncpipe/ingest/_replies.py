"""Replies built from receipts, and kept small whatever the items hold.

A reply lists one reason per rejected item; a reason quotes the offending value. Without
bounds a batch of huge invalid values gets a reply larger than the request -- past the
message limit, so the batch can never be acknowledged (``RESOURCE_EXHAUSTED`` while its
valid items are stored). So every reason is cut to :data:`MAX_REASON_CHARS`, and the
reasons listed stop once they fill their share of the message limit (``items_rejected``
still counts them all and ``message`` says how many are listed). Dead letters written by
the intake are bounded the same way (:func:`item_text`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message

from .._deadletter import DeadLetter
from .._receipt import Outcome, Receipt
from ._routes import Converted

__all__ = [
    "MAX_PAYLOAD_CHARS",
    "MAX_REASON_CHARS",
    "clip",
    "item_text",
    "pipeline_outcome",
    "response",
]

#: The longest reason a reply (or an intake dead letter) carries.
MAX_REASON_CHARS = 200
#: The longest payload text of an intake dead letter.
MAX_PAYLOAD_CHARS = 1024
#: Bytes a listed rejection costs beyond its reason: two tags, two lengths, the index.
_REJECTION_OVERHEAD = 16


def clip(text: str, limit: int = MAX_REASON_CHARS) -> str:
    """``text``, or its first ``limit`` characters then ``… (N chars)``."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} chars)"


def item_text(item: Any) -> str:
    """An invalid item for its dead letter: protobuf text format on one line, clipped."""
    return clip(" ".join(str(item).split()), MAX_PAYLOAD_CHARS)


def response(
    reply_type: type[Message],
    *,
    success: bool,
    message: str,
    batch_id: str,
    received: int,
    rejected: int,
    rejections: list[tuple[int, str]],
    budget: int,
) -> Any:
    """The reply to a batch (a ``reply_type``: see :mod:`._service` for its fields),
    listing ``rejections`` in at most ``budget`` bytes."""
    listed = len(rejections)
    used = 0
    for position, (_, reason) in enumerate(rejections):
        used += len(reason) + _REJECTION_OVERHEAD  # chars: a lower bound of the bytes
        if used > budget:
            listed = position
            break
    if listed < len(rejections):
        message = f"{message} ({len(rejections)} rejections, the first {listed} listed)"
    # One constructor call: each attribute set on a protobuf message costs a lookup.
    make: Callable[..., Any] = reply_type  # recent stubs type Message() without fields
    reply: Any = make(
        success=success,
        message=message,
        batch_id=batch_id,
        items_received=received,
        items_processed=received - rejected,
        items_rejected=rejected,
    )
    if rejections:
        add = reply.rejections.add
        for index, reason in rejections[:listed]:
            add(index=index, reason=reason)
    return reply


def pipeline_outcome(
    receipt: Receipt, converted: Converted, ingress: str
) -> tuple[list[tuple[int, str]], str | None, int]:
    """The batch's rejections (the intake's, then the pipeline nodes'), what failed as a
    whole (None: nothing), and how many items that cost.

    A rejection by the node the batch was submitted to carries a position in the
    submitted records, mapped back to the request; a node further down sees messages of
    its own shape, so its rejections are listed with index -1. Reasons given by the
    pipeline's handlers are clipped like the intake's.
    """
    skipped = receipt.items[Outcome.SKIPPED]
    if not receipt.dead_letters and not skipped:  # the usual case: nothing failed
        return converted.rejections, None, 0  # already in index order
    rejections = list(converted.rejections)
    listed: set[tuple[int, str]] = set()  # a fan-out may report one item twice
    failures: list[DeadLetter] = []
    indices = converted.indices
    rejected_letters = 0
    for letter in receipt.dead_letters:
        if letter.error_type != "Rejected":
            failures.append(letter)
            continue
        rejected_letters += 1
        index = letter.index
        reason = clip(f"{letter.node}: {letter.error_message}")
        if letter.node == ingress and index is not None and 0 <= index < len(indices):
            entry = (indices[index], reason)
        else:
            entry = (-1, reason)
        if entry not in listed:
            listed.add(entry)
            rejections.append(entry)
    rejections.sort()
    if not failures and not skipped:
        return rejections, None, 0
    lost = receipt.items[Outcome.DEAD_LETTERED] - rejected_letters + skipped
    failed_items = max(0, min(lost, len(converted.records) - len(listed)))
    if failures:
        first = failures[0]
        failure = clip(f"node {first.node!r}: {first.error_type}: {first.error_message}")
    else:
        failure = "dropped under on_error='skip'"
    return rejections, failure, failed_items
