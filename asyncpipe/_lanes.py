"""A keyed node's lanes: one input channel per lane, fed by a dispatcher that splits each
message by key (see ``_keys``), and the identity of each message a stateful lane handles.

Splitting a message into ``m`` parts forks its receipt ``m - 1`` times (the message's own
hold goes to the first part), so the receipt resolves only when every part has ended.
"""

from __future__ import annotations

import weakref
from typing import Any

from ._channel import EMPTY as _EMPTY
from ._channel import Channel, EndOfStream
from ._keys import KeyFunction, lane_of, split_by_lane
from ._receipt import Receipt

__all__ = ["Arrivals", "LaneEnvelope", "dispatch"]

#: What a stateful lane receives: a part of a message, its receipt, the positions of the
#: part's records in the message (None: the whole message), and the message's identity
#: (None: no origin, so no deduplication).
LaneEnvelope = tuple[Any, Receipt | None, list[int] | None, str | None]


class Arrivals:
    """Names each message a node receives, stably across replays of its origin.

    The ``n``-th message derived from a receipt whose origin is ``o`` to arrive at this
    node is ``o␟n``: a replay of the same input (a client resending a batch with the same
    ``origin``) produces the same names, provided the messages of one origin reach the node
    in the same order -- true along chains of ordered nodes (the default).
    """

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: weakref.WeakKeyDictionary[Receipt, int] = weakref.WeakKeyDictionary()

    def name(self, receipt: Receipt | None) -> str | None:
        if receipt is None or receipt.origin is None:
            return None
        counts = self._counts
        n = counts.get(receipt, 0)
        counts[receipt] = n + 1
        return f"{receipt.origin}\x1f{n}"


async def dispatch(
    inbox: Channel[tuple[Any, Receipt | None]],
    lanes: list[Channel[Any]],
    key: KeyFunction,
    *,
    named: bool,
) -> None:
    """Split every message of ``inbox`` by key into ``lanes`` until the inbox ends, then
    close the lanes.

    With ``named``, lanes receive :data:`LaneEnvelope` s (a part's name is its message's
    name and its lane); otherwise ``(part, receipt)`` envelopes.
    """
    count = len(lanes)
    arrivals = Arrivals()
    try:
        while True:
            envelope = inbox.get_nowait(_EMPTY)
            if envelope is _EMPTY:
                try:
                    envelope = await inbox.get()
                except EndOfStream:
                    return
            payload, receipt = envelope
            name = arrivals.name(receipt) if named else None
            if type(payload) is not list:
                lane = lane_of(key(payload), count)
                await _put(lanes[lane], payload, receipt, None, name, lane, named)
                continue
            parts = split_by_lane(payload, key, count)
            if not parts:  # an empty message: lane 0 sees it, so it still ends somewhere
                await _put(lanes[0], payload, receipt, None, name, 0, named)
                continue
            if receipt is not None and len(parts) > 1:
                receipt._fork(len(parts) - 1)
            for lane, (records, indices) in parts.items():
                await _put(lanes[lane], records, receipt, indices, name, lane, named)
    finally:
        for channel in lanes:
            channel.close()


async def _put(
    channel: Channel[Any],
    part: Any,
    receipt: Receipt | None,
    indices: list[int] | None,
    name: str | None,
    lane: int,
    named: bool,
) -> None:
    envelope: Any = (
        (part, receipt, indices, None if name is None else f"{name}/{lane}")
        if named
        else (part, receipt)
    )
    if not channel.put_nowait(envelope):
        await channel.put(envelope)
