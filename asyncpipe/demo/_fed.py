"""Feeding a batch source once per work directory, so that ``--serve`` can restart.

The demo's database tables and its timer are read in full by the first run. A restart
(after a stop or a crash) must not count them again: the aggregator's state already holds
what they brought. :class:`FedOnce` sends each batch with a receipt whose origin names it
(``history_db#17``), and once every batch has reached its end it writes a marker file;
a run that finds the marker feeds nothing. A run that stopped before the marker was
written feeds the batches again, under the same names: the stateful stages recognise the
batches they already applied, the sinks upsert, and dead-letter sinks keep one letter
per (node, origin, index).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any

from .._receipt import Receipt, Tracked

__all__ = ["FedOnce"]

logger = logging.getLogger(__name__)


class FedOnce:
    """A source that feeds ``source``'s batches unless ``marker`` exists, then writes it.

    Args:
        source: an async iterable of messages (a connector).
        name: the origin prefix of its batches (the node's name).
        marker: the file that says every batch has been fed and has reached its end.
    """

    def __init__(self, source: AsyncIterable[Any], name: str, marker: Path) -> None:
        self.source = source
        self.name = name
        self.marker = marker

    def __repr__(self) -> str:
        return f"FedOnce({self.source!r})"

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._feed()

    async def _feed(self) -> AsyncIterator[Any]:
        if self.marker.exists():
            logger.info("%s: already fed (%s)", self.name, self.marker)
            return
        receipts: list[Receipt] = []
        async for batch in self.source:
            receipt = Receipt(self.name, origin=f"{self.name}#{len(receipts)}")
            yield Tracked(batch, receipt)
            receipt.release()
            receipts.append(receipt)
        for receipt in receipts:
            await receipt
        self.marker.write_text(json.dumps({"batches": len(receipts)}) + "\n")
