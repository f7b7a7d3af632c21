"""A state store in the process's memory."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from ._store import StateCommit, StoredMark

__all__ = ["DEFAULT_DEDUPE_TTL", "MemoryStateStore"]

#: Seconds a delivered mark is kept (a replay older than that is applied again).
DEFAULT_DEDUPE_TTL = 7 * 24 * 3600.0


class _Space:
    __slots__ = ("marks", "meta", "values")

    def __init__(self) -> None:
        self.values: dict[bytes, bytes] = {}
        #: name -> [committed at, rejections, outputs]; in commit order.
        self.marks: dict[str, list[object]] = {}
        self.meta: dict[str, bytes] = {}


class MemoryStateStore:
    """The default store: nothing survives the process.

    With ``persistent=False`` (the default) nodes keep their state in their own memory
    and use the store only to recognise replays within the run. ``persistent=True`` makes
    nodes write every change here as they would to a file (encoded by their codec): one
    store object shared by two runs in one process then behaves like a file that survived
    a restart -- handy in tests.

    Args:
        dedupe_ttl: seconds a delivered mark is kept.
        clock: wall-clock time for expiry (``time.time``).
    """

    def __init__(
        self,
        *,
        persistent: bool = False,
        dedupe_ttl: float = DEFAULT_DEDUPE_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.persistent = persistent
        self.dedupe_ttl = dedupe_ttl
        self._clock = clock
        self._spaces: dict[str, _Space] = {}

    def __repr__(self) -> str:
        return f"<MemoryStateStore persistent={self.persistent} namespaces={len(self._spaces)}>"

    def _space(self, namespace: str) -> _Space:
        space = self._spaces.get(namespace)
        if space is None:
            space = self._spaces[namespace] = _Space()
        return space

    async def open(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def load(self, namespace: str, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        values = self._space(namespace).values
        return {key: values[key] for key in keys if key in values}

    async def scan(self, namespace: str) -> list[tuple[bytes, bytes]]:
        return list(self._space(namespace).values.items())

    async def seen(self, namespace: str, names: Sequence[str]) -> dict[str, StoredMark]:
        marks = self._space(namespace).marks
        found = {}
        for name in names:
            mark = marks.get(name)
            if mark is not None:
                found[name] = StoredMark(mark[1], mark[2])  # type: ignore[arg-type]
        return found

    async def undelivered(self, namespace: str) -> list[tuple[str, bytes]]:
        marks = self._space(namespace).marks
        return [(name, m[2]) for name, m in marks.items() if m[2] is not None]  # type: ignore[misc]

    async def read_meta(self, namespace: str) -> dict[str, bytes]:
        return dict(self._space(namespace).meta)

    async def commit(self, namespace: str, commit: StateCommit) -> None:
        space = self._space(namespace)
        values = space.values
        for key, value in commit.changes:
            if value is None:
                values.pop(key, None)
            else:
                values[key] = value
        now = self._clock()
        marks = space.marks
        for name, rejections, outputs in commit.marks:
            marks.setdefault(name, [now, rejections, outputs])
        for name in commit.delivered:
            mark = marks.get(name)
            if mark is not None:
                mark[2] = None
        space.meta.update(commit.meta)
        self._expire(marks, now - self.dedupe_ttl)

    @staticmethod
    def _expire(marks: dict[str, list[object]], before: float) -> None:
        expired = []
        for name, mark in marks.items():  # oldest first
            if mark[0] >= before:  # type: ignore[operator]
                break
            if mark[2] is None:
                expired.append(name)
        for name in expired:
            del marks[name]
