"""Dead-lettering one bad input from a connector, inside a pipeline or not."""

from __future__ import annotations

import logging
from typing import Any

from .._handler import reject

__all__ = ["reject_item"]

logger = logging.getLogger("asyncpipe.connectors")


def reject_item(
    payload: Any, reason: str, *, index: int | None = None, origin: str | None = None
) -> None:
    """:func:`asyncpipe.reject` the input, so it becomes a dead letter of the node.

    A connector iterated or called outside a pipeline (``async for batch in
    CsvSource(...)``) has no node to dead-letter for: the reason is logged as a warning
    and the input skipped.
    """
    try:
        reject(payload, reason, index=index, origin=origin)
    except RuntimeError:
        logger.warning("skipped: %s", reason)
