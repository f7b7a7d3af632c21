"""Session windows: per key, records less than a gap apart share a window."""

from __future__ import annotations

import heapq
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from .._handler import Rejection
from .._keys import KeyFunction, lane_of
from ._codec import encoder
from ._window_lane import WindowLane
from ._windows import Session

if TYPE_CHECKING:
    from ._windows import Windowed

__all__ = ["SessionLane"]


class SessionLane(WindowLane):
    """Per key, its open sessions ``[start, last, accumulator]`` in time order; a heap of
    (end, seq, key) entries says when to look at a key again (stale entries are skipped)."""

    def __init__(self, handler: Windowed, key: KeyFunction) -> None:
        super().__init__(handler, key)
        window = handler.window
        assert isinstance(window, Session)
        self.gap = window.gap
        self.states: dict[Hashable, list[list[Any]]] = {}
        self.heap: list[tuple[float, int, Hashable]] = []
        self.seq = 0
        agg = handler.aggregation
        self.new, self.add, self.merge = agg.new, agg.add_one, agg.merge

    def restore(self, stored: Any, value: Any, lane: int, lanes: int) -> None:
        key = tuple(stored) if isinstance(stored, list) else stored  # a tuple through JSON
        if lanes > 1 and lane_of(key, lanes) != lane:
            return
        self.states[key] = [list(session) for session in value]
        for session in value:
            self._watch(session[1] + self.gap, key)

    def changes(self) -> list[tuple[bytes, bytes | None]]:
        encode = encoder(self.codec)
        changed = []
        for key in self.dirty:
            sessions = self.states.get(key)
            changed.append((encode(key), encode(sessions) if sessions else None))
        self.dirty.clear()
        return changed

    def _watch(self, end: float, key: Hashable) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (end, self.seq, key))

    async def apply(self, prepared: Any) -> tuple[list[Any], list[Rejection]]:
        records = prepared if type(prepared) is list else [prepared]
        late = []
        now = self.now()
        for i, record in enumerate(records):
            t = now if self.handler.event_time is None else self.time_of(record)
            if t > self.maxt:
                self.maxt = t
            if not self._add(t, record):
                late.append((i, self.maxt - self.lateness))
        rejected = self.late(records, late) if late else []
        return self.close(self.maxt - self.lateness), rejected

    def _add(self, t: float, record: Any) -> bool:
        gap = self.gap
        k = self.key(record)
        sessions = self.states.get(k)
        hits = [s for s in sessions or () if s[0] - gap < t < s[1] + gap]
        if not hits:
            if t + gap <= self.maxt - self.lateness:
                return False
            session: list[Any] = [t, t, self.new()]
            if sessions is None:
                sessions = self.states[k] = []
            sessions.append(session)
            sessions.sort(key=lambda s: s[0])
        else:
            session = hits[0]
            for other in hits[1:]:  # the record bridges sessions: they become one
                self.merge(session[2], other[2])
                session[1] = max(session[1], other[1])
                assert sessions is not None
                sessions.remove(other)
            session[0] = min(session[0], t)
            session[1] = max(session[1], t)
        self.add(session[2], record)
        self._watch(session[1] + gap, k)
        self.dirty.add(k)
        return True

    def close(self, wm: float) -> list[Any]:
        heap, gap = self.heap, self.gap
        out: list[Any] = []
        while heap and heap[0][0] <= wm:
            _, _, k = heapq.heappop(heap)
            sessions = self.states.get(k)
            if not sessions:
                continue  # stale: already closed
            for session in [s for s in sessions if s[1] + gap <= wm]:
                record = {"key": k, "start": session[0], "end": session[1] + gap}
                record.update(self.result(session[2]))
                out.append(record)
                sessions.remove(session)
                self.dirty.add(k)
            if not sessions:
                del self.states[k]
        return out

    def finish(self) -> list[Any]:
        out = []
        for k, sessions in self.states.items():
            for session in sessions:
                record = {"key": k, "start": session[0], "end": session[1] + self.gap}
                record.update(self.result(session[2]))
                out.append(record)
        return sorted(out, key=lambda r: (r["end"], r["start"]))
