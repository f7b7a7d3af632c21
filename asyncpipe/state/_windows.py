"""Windows over event time (or processing time): tumbling, sliding and session windows,
aggregated per key, emitted when the watermark passes their end.

Time is decided record by record, in arrival order at the lane: the watermark is the
largest event time seen minus ``allowed_lateness``; a record whose every window has
already ended at or before the watermark is late (dead-lettered, "late by Ns"); after each
message the windows that end at or before the watermark are emitted -- for every key, from
an index of window ends (a heap). So results depend only on the records and their order,
never on how they were batched or on wall time (unless processing time is asked for).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._handler import BaseHandler
from .._keys import KeyFunction
from ._codec import Codec, PickleCodec
from ._lane import run_stateful
from ._reducers import Aggregation, Reducer

if TYPE_CHECKING:
    from .._node import NodeRuntime

__all__ = ["Session", "Sliding", "Tumbling", "Windowed"]


@dataclass(frozen=True)
class Tumbling:
    """Windows of ``size`` seconds, one after the other: ``[offset + i*size, offset +
    (i+1)*size)``."""

    size: float
    offset: float = 0

    def __post_init__(self) -> None:
        if not self.size > 0:
            raise ValueError(f"window size must be > 0, got {self.size!r}")


@dataclass(frozen=True)
class Sliding:
    """Windows of ``size`` seconds starting every ``every`` seconds (hopping): a record
    belongs to every window that contains its time."""

    size: float
    every: float
    offset: float = 0

    def __post_init__(self) -> None:
        if not (self.size > 0 and self.every > 0):
            raise ValueError(f"size and every must be > 0, got {self.size!r}, {self.every!r}")


@dataclass(frozen=True)
class Session:
    """Per key, records less than ``gap`` seconds apart share a window; it starts at its
    first record and ends ``gap`` after its last."""

    gap: float

    def __post_init__(self) -> None:
        if not self.gap > 0:
            raise ValueError(f"gap must be > 0, got {self.gap!r}")


Window = Tumbling | Sliding | Session


class Windowed(BaseHandler):
    """Aggregates records per key and window; put it in a node with ``key=``.

    Args:
        window: :class:`Tumbling`, :class:`Sliding` or :class:`Session`.
        aggregate: output field -> reducer (:func:`count`, :func:`total`, :func:`minimum`,
            :func:`maximum`, :func:`mean`, :func:`collect`, :func:`fold`).
        event_time: the field holding a record's time in seconds (int or float), or a
            function of the record returning it; None: processing time, ``clock()`` read
            once per message.
        allowed_lateness: seconds the watermark stays behind the largest event time seen.
        clock: the processing-time clock (``time.time``); give your own in tests.
        codec: how state is stored (keys and accumulators; pickle by default).

    Each emitted window is a record ``{"key": k, "start": s, "end": e, <aggregates>}``;
    the windows a message closes are sent on as one list message, under that message's
    receipt. At the end of the input (``finish()``) the windows still open are emitted
    too; they stay in the state, so a later run that sees more of them emits them again
    with the new contents (sinks upsert on key and start). A record is dead-lettered as
    late when each window it belongs to has already ended at or before the watermark.
    Open windows live in memory (a lane's keys times the windows open within the
    lateness), written to a persistent store at each commit and read back at start.
    """

    def __init__(
        self,
        window: Window,
        aggregate: Mapping[str, Reducer],
        *,
        event_time: str | Callable[[Any], float] | None = None,
        allowed_lateness: float = 0.0,
        clock: Callable[[], float] = time.time,
        codec: Codec | None = None,
    ) -> None:
        if not isinstance(window, Tumbling | Sliding | Session):
            raise TypeError(f"window must be Tumbling, Sliding or Session, got {window!r}")
        if allowed_lateness < 0:
            raise ValueError(f"allowed_lateness must be >= 0, got {allowed_lateness!r}")
        self.window = window
        self.aggregation = Aggregation(aggregate)
        if isinstance(window, Session) and not self.aggregation.mergeable:
            raise ValueError("session windows merge accumulators: give fold() a merge=")
        self.event_time = event_time
        self.allowed_lateness = allowed_lateness
        self.clock = clock
        self.codec: Codec = codec or PickleCodec()

    def __repr__(self) -> str:
        return f"Windowed({self.window!r}, {self.aggregation.names})"

    def handle(self, data: Any) -> Any:
        raise TypeError("Windowed is a stateful handler: put it in a HandlerNode")

    def _asyncpipe_lanes(self, runtime: NodeRuntime) -> Awaitable[None]:
        from ._fixed import FixedLane  # the lanes know this class: imported when run
        from ._sessions import SessionLane

        key: KeyFunction = runtime.node.key or (lambda record: None)
        if isinstance(self.window, Session):
            return run_stateful(runtime, lambda: SessionLane(self, key))
        field = runtime.node.key_field
        return run_stateful(runtime, lambda: FixedLane(self, key, field))
