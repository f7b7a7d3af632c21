"""The receipt a stateful node's outputs travel on, named after the message they came
from (:class:`Relay`), and what it tells a stateful node downstream (:func:`unseen`)."""

from __future__ import annotations

import asyncio

from .._receipt import Receipt

__all__ = ["Relay", "relay_origin", "unseen"]


class Relay(Receipt):
    """The receipt of one named message's outputs: its origin is the message's name (with
    the node's: :func:`relay_origin`), so a stateful node downstream names them alike
    whether they come now or are sent again from the outbox after a crash
    (``_lane._redeliver``) -- and recognises the replay.
    Outcomes, items and dead letters are counted on the message's own receipt, which
    settles when the relay does.

    ``fresh``: the outputs come from applying the message in this run (the store had no
    mark of it, and its mark is committed with the outputs): no node downstream can have
    seen messages named after it, so none looks their names up (:func:`unseen`). The
    outputs of an earlier run, sent again from the outbox, never travel on a fresh relay.
    """

    __slots__ = ("fresh", "parent")

    def __init__(self, parent: Receipt, node: str, name: str, *, fresh: bool) -> None:
        super().__init__(node, origin=relay_origin(node, name))
        self.parent = parent
        self.fresh = fresh
        self.counts = parent.counts
        self.items = parent.items
        self.dead_letters = parent.dead_letters
        self.add_done_callback(lambda _: parent._settle(None))
        parent._future.add_done_callback(self._parent_done)

    def _parent_done(self, future: asyncio.Future[Receipt]) -> None:
        if not future.cancelled() and future.exception() is not None:
            self._abort("its message's receipt was aborted")


def relay_origin(node: str, name: str) -> str:
    """The origin of the outputs ``node`` produced from its message ``name``: the node is
    part of it, so the outputs two stateful nodes derive from one message, meeting in a
    third, are not taken for one another (nor for a replay of one another)."""
    return f"{node}\x1e{name}"


def unseen(receipt: Receipt | None) -> bool:
    """Whether the messages of ``receipt`` cannot have been seen by this node: the outputs
    of an upstream stateful node's fresh apply (:class:`Relay`), named after a mark that
    did not exist before this run. (A mark purged after ``dedupe_ttl`` is the exception
    the store documents: the upstream node applied that message again too.)"""
    return type(receipt) is Relay and receipt.fresh
