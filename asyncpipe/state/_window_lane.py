"""What the lanes of tumbling, sliding and session windows share: the watermark, late
records, the lane's meta, restoring from the store."""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from .._handler import Rejection
from .._keys import KeyFunction
from ._lane import LaneState
from ._store import StateStore

if TYPE_CHECKING:
    from ._windows import Windowed

__all__ = ["WindowLane"]


class WindowLane(LaneState):
    """What both window lanes share: watermark, late records, meta, finish."""

    def __init__(self, handler: Windowed, key: KeyFunction) -> None:
        self.handler = handler
        self.codec = handler.codec
        self.key = key
        self.lateness = handler.allowed_lateness
        self.result = handler.aggregation.result
        self.now = handler.clock if handler.event_time is None else _no_clock
        self.maxt = -math.inf
        self.dirty: set[Hashable] = set()
        self.persistent = False
        self.meta_name = "watermark:0"

    async def open(self, store: StateStore, namespace: str, lane: int, lanes: int) -> None:
        self.persistent = store.persistent
        self.meta_name = f"watermark:{lane}"
        if not self.persistent:
            return
        meta = await store.read_meta(namespace)
        if self.meta_name in meta:
            self.maxt = float(self.codec.decode(meta[self.meta_name]))
        decode = self.codec.decode
        for data, value in await store.scan(namespace):
            self.restore(decode(data), decode(value), lane, lanes)

    def restore(self, stored: Any, value: Any, lane: int, lanes: int) -> None:
        """Take back one stored (key, value), if it belongs to this lane."""
        raise NotImplementedError

    async def prepare(self, parts: list[Any]) -> list[Any]:
        return parts

    def late(self, records: list[Any], late: list[tuple[int, float]]) -> list[Rejection]:
        """Rejections of the late records: (position, watermark when it arrived)."""
        rejected = []
        for i, wm in late:
            record = records[i]
            rejected.append(Rejection(record, f"late by {wm - self.time_of(record):g}s", i))
        return rejected

    def time_of(self, record: Any) -> float:
        event_time = self.handler.event_time
        if event_time is None:
            return self.maxt
        if isinstance(event_time, str):
            return float(record[event_time])
        return float(event_time(record))

    def committed(self) -> None:
        if not self.persistent:
            self.dirty.clear()  # nothing is written: forget what changed

    def meta(self) -> dict[str, bytes]:
        return {self.meta_name: self.codec.encode(self.maxt)} if self.maxt > -math.inf else {}


def _no_clock() -> float:
    return 0.0
