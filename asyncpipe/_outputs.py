"""A node's outputs: sending downstream, the counters, receipt forks, and how a handled
message ends (committed, filtered, or outputs to send).

Messages travel as ``(payload, receipt)`` envelopes. A node ``fork``s a message's receipt
once per copy it sends downstream *before* it ``settle``s the copy it consumed, so the
receipt's count of messages in flight cannot reach zero early.
"""

from __future__ import annotations

from typing import Any

from ._channel import Channel
from ._errors import ChannelClosed
from ._metrics import NodeStats
from ._receipt import Outcome, Receipt, item_count

__all__ = ["STREAMED", "Envelope", "OutputClosed", "Outputs", "Separate", "count_dropped"]

Envelope = tuple[Any, Receipt | None]

#: A handler result: a generator's outputs were sent while it ran.
STREAMED: Any = object()


class Separate(list[Any]):
    """A handler result: several messages to send one by one (the results of a message's
    parts, when they cannot be joined into one)."""


def count_dropped(payload: Any, result: list[Any], receipt: Receipt, rejected: int) -> None:
    """Count the items a list-in, list-out handler dropped as filtered items: those of
    ``payload`` neither in ``result`` nor ``rejected`` (dead-lettered on their own). A
    result with as many items or more (an expansion) drops none."""
    if isinstance(payload, list | tuple):
        dropped = len(payload) - rejected - len(result)
        if dropped > 0:
            receipt._drop(dropped)


class OutputClosed(ChannelClosed):
    """A dependent's channel refused an output: the pipeline is being torn down. Raised by
    the runtime only; a handler that raises :class:`ChannelClosed` has failed, like any
    handler that raises."""

    @classmethod
    def of(cls, exc: ChannelClosed) -> OutputClosed:
        error = cls(str(exc))
        error.__cause__ = exc
        return error


class Outputs:
    """The channels of a node's dependents, and what the node counts as it sends."""

    __slots__ = ("channels", "fan", "stats", "terminal")

    def __init__(self, channels: list[Channel[Envelope]], stats: NodeStats) -> None:
        self.channels = channels
        self.fan = len(channels)
        self.stats = stats
        #: A node without dependents is a sink: what it handles is committed.
        self.terminal = not channels

    async def send(self, item: Any, receipt: Receipt | None) -> None:
        """Send one output to every dependent (waiting while any is full)."""
        if receipt is not None:
            receipt._fork(self.fan)
        await self.forward((item, receipt))

    async def forward(self, envelope: Envelope) -> None:
        """Send an output whose receipt is already forked to every dependent.

        Raises :class:`OutputClosed` if a dependent is gone (the pipeline is torn down).
        """
        try:
            for channel in self.channels:
                if not channel.put_nowait(envelope):
                    await channel.put(envelope)
        except ChannelClosed as exc:
            raise OutputClosed.of(exc) from None
        self.stats.emitted += 1

    async def send_all(self, items: list[Any], receipt: Receipt | None) -> None:
        """Send a handled message's outputs, then release the message from its receipt."""
        for item in items:
            await self.send(item, receipt)
        if receipt is not None:
            receipt._settle(None)

    def close(self) -> None:
        """This node sends nothing more."""
        for channel in self.channels:
            channel.close_sender()

    def conclude(
        self, result: Any, payload: Any, receipt: Receipt | None, rejected: int, streams: bool
    ) -> list[Any] | None:
        """How a handled message ends: the outputs still to send (for :meth:`send_all`), or
        None when it ended here -- committed by a sink, or filtered -- with its receipt
        settled. ``rejected``: items of the message already dead-lettered on their own."""
        stats = self.stats
        if self.terminal:
            stats.committed += 1
            if receipt is not None:
                # Items rejected on their own were counted as dead letters, not committed.
                receipt._settle(Outcome.COMMITTED, items=max(0, item_count(payload) - rejected))
            return None
        if result is STREAMED:
            return []
        if result is None or ((streams or type(result) is Separate) and not result):
            stats.filtered += 1
            if receipt is not None:
                receipt._settle(Outcome.FILTERED, items=max(0, item_count(payload) - rejected))
            return None
        if streams or type(result) is Separate:
            return list(result)
        if type(result) is list and receipt is not None:
            count_dropped(payload, result, receipt, rejected)
        return [result]
