"""A pipeline's intake: ``submit()`` into a node's input, and the receipts still in flight.

The intake counts as one sender of every node's input channel, so a channel closes only
once the intake has closed too (at stop) and every upstream node has finished.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Any

from ._channel import Channel
from ._errors import ChannelClosed, PipelineClosed
from ._outputs import Envelope
from ._receipt import Receipt

__all__ = ["Intake"]


class Intake:
    """Submits messages into nodes' inputs and keeps track of their receipts."""

    def __init__(
        self,
        inboxes: dict[str, Channel[Envelope]],
        order: list[str],
        refusal: Callable[[], PipelineClosed],
    ) -> None:
        self._inboxes = inboxes
        self._order = order
        self._refusal = refusal  # why submit() is refused now
        self._receipts: weakref.WeakSet[Receipt] = weakref.WeakSet()
        self.open = False

    def connect(self) -> None:
        """Become a sender of every input (before the nodes run)."""
        for inbox in self._inboxes.values():
            inbox.add_sender()

    def close(self) -> None:
        """Take no more messages; the inputs close once their other senders are done."""
        self.open = False
        for inbox in self._inboxes.values():
            inbox.close_sender()

    def track(self, receipt: Receipt) -> None:
        """Follow a receipt made elsewhere (a source's :class:`Tracked` item)."""
        self._receipts.add(receipt)

    def abort(self, reason: str) -> None:
        """Fail every receipt still pending with :class:`PipelineAborted`."""
        self.open = False
        for receipt in list(self._receipts):
            receipt._abort(reason)

    async def submit(self, node: str, message: Any, origin: str | None) -> Receipt:
        inbox = self._inboxes.get(node)
        if inbox is None:
            if node in self._order:
                raise ValueError(f"node {node!r} is a source; submit to a node that has an input")
            raise KeyError(f"no node named {node!r}; nodes: {', '.join(self._order)}")
        if not self.open:
            raise self._refusal()
        receipt = Receipt(node, asyncio.get_running_loop(), origin=origin)
        try:
            await inbox.put((message, receipt))
        except ChannelClosed:
            raise self._refusal() from None
        self._receipts.add(receipt)
        return receipt
