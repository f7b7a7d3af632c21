"""Tumbling and sliding windows: the per-record loop, compiled with the aggregation.

State is flat: ``(key, window id) -> accumulator``, plus the closing index -- window id
-> the keys that have that window, and a heap of the ids. A window id is an integer
(``(t - offset) // every``), so the loop does one tuple, two dict lookups and the
reducers' list operations per record. The persistent unit is a key with its open windows
(``[[window id, accumulator], ...]``): a commit writes each key changed since the last
one once, however many of its records and windows changed -- with groups of messages per
commit, fewer rows than records.
"""

from __future__ import annotations

import heapq
import math
import textwrap
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from .._handler import Rejection
from .._keys import KeyFunction, lane_of
from ._codec import encoder
from ._store import StateStore
from ._window_lane import WindowLane
from ._windows import Sliding, Tumbling

if TYPE_CHECKING:
    from ._windows import Windowed

__all__ = ["FixedLane"]

_LOOP = """
def apply(records, lane):
    states = lane.states
    closing = lane.closing
    heap = lane.heap
    dirty = lane.dirty
    maxt = lane.maxt
    wm = maxt - LATENESS
    late = []
    now = lane.now()
    for i, r in enumerate(records):
        t = TIME
        if t > maxt:
            maxt = t
            wm = t - LATENESS
BODY
    lane.maxt = maxt
    return late
"""

_TUMBLING = """
        w = int((t - OFFSET) // SIZE)
        if OFFSET + w * SIZE + SIZE <= wm:
            late.append((i, wm))
            continue
        k = KEY
OPEN
"""

_SLIDING = """
        hi = int((t - OFFSET) // EVERY)
        k = None
        for w in range(hi - PER, hi + 1):
            end = OFFSET + w * EVERY + SIZE
            if end <= t or end <= wm:
                continue
            if k is None:
                k = KEY
OPEN
        if k is None:
            late.append((i, wm))
"""

# Record ``r`` (key ``k``) into window ``w``: the window opened (and put in the closing
# index) on its first record, then the reducers. Indented into the templates above.
_OPEN = """
kw = (k, w)
a = states.get(kw)
if a is None:
    a = states[kw] = INIT
    ks = closing.get(w)
    if ks is None:
        closing[w] = [k]
        heappush(heap, w)
    else:
        ks.append(k)
DIRTY
ADD
"""


def _compile(
    handler: Windowed, key: KeyFunction, key_field: str | None, track: bool
) -> Callable[[list[Any], Any], list[tuple[int, float]]]:
    """The lane's per-message loop; ``track``: record changed windows for commits."""
    window = handler.window
    assert isinstance(window, Tumbling | Sliding)
    agg = handler.aggregation
    env: dict[str, Any] = {**agg.env, "_key": key, "heappush": heapq.heappush}
    if handler.event_time is None:
        time_of = "now"
    elif isinstance(handler.event_time, str):
        time_of = f"r[{handler.event_time!r}]"
    else:
        env["_time"] = handler.event_time
        time_of = "_time(r)"
    values: dict[str, Any] = {"SIZE": window.size, "OFFSET": window.offset}
    if isinstance(window, Tumbling):
        body, indent = _TUMBLING, " " * 8
    else:
        assert isinstance(window, Sliding)
        body, indent = _SLIDING, " " * 12
        values.update(EVERY=window.every, PER=math.ceil(window.size / window.every))
    # Tracked (persistent store): the keys changed since the last commit.
    record = _OPEN.replace("DIRTY", "dirty.add(k)" if track else "")
    record = record.replace("ADD", "\n".join(agg.add)).strip("\n")
    body = body.replace("OPEN", textwrap.indent(record, indent))
    source = _LOOP.replace("BODY", body.strip("\n")).replace("TIME", time_of)
    source = source.replace("KEY", f"r[{key_field!r}]" if key_field else "_key(r)")
    source = source.replace("INIT", agg.init)
    values["LATENESS"] = handler.allowed_lateness
    for name, value in values.items():
        source = source.replace(name, repr(value))
    exec(source, env)  # our own template; the user's functions are passed by name
    apply: Callable[[list[Any], Any], list[tuple[int, float]]] = env["apply"]
    return apply


def _emitter(handler: Windowed) -> Callable[[Any, Any, Any, list[Any]], dict[str, Any]]:
    """``emit(key, start, end, accumulator)``: a window's output record, in one call."""
    agg = handler.aggregation
    env = dict(agg.env)
    fields = ", ".join(f"{name!r}: {expr}" for name, expr in agg.results)
    source = f'def emit(k, s, e, a):\n    return {{"key": k, "start": s, "end": e, {fields}}}'
    exec(source, env)  # our own template
    emit: Callable[[Any, Any, Any, list[Any]], dict[str, Any]] = env["emit"]
    return emit


class FixedLane(WindowLane):
    """A lane of tumbling or sliding windows (module docstring)."""

    def __init__(self, handler: Windowed, key: KeyFunction, key_field: str | None) -> None:
        super().__init__(handler, key)
        window = handler.window
        assert isinstance(window, Tumbling | Sliding)
        self.size = window.size
        self.every = window.every if isinstance(window, Sliding) else window.size
        self.offset = window.offset
        self.key_field = key_field
        self.states: dict[tuple[Hashable, int], list[Any]] = {}
        self.closing: dict[int, list[Hashable]] = {}
        self.heap: list[int] = []
        self.dirty: set[Hashable] = set()
        #: The stored form of each key that has a row in the store (written at commits).
        self.names: dict[Hashable, bytes] = {}
        self.encode = encoder(self.codec)
        self.loop = _compile(handler, key, key_field, track=False)
        self.emit = _emitter(handler)

    async def open(self, store: StateStore, namespace: str, lane: int, lanes: int) -> None:
        await super().open(store, namespace, lane, lanes)
        if self.persistent:
            self.loop = _compile(self.handler, self.key, self.key_field, track=True)

    def restore(self, stored: Any, value: Any, lane: int, lanes: int) -> None:
        k = tuple(stored) if isinstance(stored, list) else stored  # a tuple through JSON
        if lanes > 1 and lane_of(k, lanes) != lane:
            return
        for w, a in value:
            self.states[(k, w)] = a
            keys = self.closing.get(w)
            if keys is None:
                self.closing[w] = [k]
                heapq.heappush(self.heap, w)
            else:
                keys.append(k)

    def changes(self) -> list[tuple[bytes, bytes | None]]:
        # A key's open windows are among the few window ids open at all (those in the
        # closing index): looked up here, per changed key, rather than kept per key.
        encode, get, names = self.encode, self.states.get, self.names
        ids = sorted(self.closing)
        changed: list[tuple[bytes, bytes | None]] = []
        for k in self.dirty:
            name = names.get(k)
            if name is None:
                name = names[k] = encode(k)
            wins = [[w, a] for w in ids if (a := get((k, w))) is not None]
            if wins:
                changed.append((name, encode(wins)))
            else:  # no window open: the row goes
                del names[k]
                changed.append((name, None))
        self.dirty.clear()
        return changed

    async def apply(self, prepared: Any) -> tuple[list[Any], list[Rejection]]:
        records = prepared if type(prepared) is list else [prepared]
        late = self.loop(records, self)
        rejected = self.late(records, late) if late else []
        return self.close(self.maxt - self.lateness), rejected

    def close(self, wm: float) -> list[Any]:
        heap = self.heap
        every, size, offset = self.every, self.size, self.offset
        if not heap or offset + heap[0] * every + size > wm:
            return []
        out: list[Any] = []
        states, closing, emit = self.states, self.closing, self.emit
        dirty = self.dirty if self.persistent else None
        while heap and offset + heap[0] * every + size <= wm:
            w = heapq.heappop(heap)
            start = offset + w * every
            end = start + size
            keys = closing.pop(w)
            for k in keys:
                out.append(emit(k, start, end, states.pop((k, w))))
            if dirty is not None:
                dirty.update(keys)
        return out

    def finish(self) -> list[Any]:
        out = []
        every, size, offset, emit = self.every, self.size, self.offset, self.emit
        for w in sorted(self.closing):
            start = offset + w * every
            for k in self.closing[w]:
                out.append(emit(k, start, start + size, self.states[(k, w)]))
        return out
