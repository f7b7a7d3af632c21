"""A plain, record-by-record model of tumbling windows with a watermark: what a windowed
node must produce, whatever the batching, the lanes or the crashes."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TumblingModel:
    size: int
    lateness: float
    maxt: float = -math.inf
    open: dict[tuple[Any, int], list[Any]] = field(default_factory=dict)
    closed: dict[tuple[Any, int], tuple[int, int]] = field(default_factory=dict)
    late: list[Any] = field(default_factory=list)

    def feed(self, records: Iterable[dict[str, Any]]) -> None:
        for r in records:
            t = r["t"]
            self.maxt = max(self.maxt, t)
            wm = self.maxt - self.lateness
            w = int(t // self.size)
            if (w + 1) * self.size <= wm:
                self.late.append(r)
                continue
            acc = self.open.setdefault((r["k"], w), [0, 0])
            acc[0] += 1
            acc[1] += r["v"]
        wm = self.maxt - self.lateness
        for k, w in sorted(self.open, key=lambda kw: kw[1]):
            if (w + 1) * self.size <= wm:
                n, total = self.open.pop((k, w))
                self.closed[(k, w * self.size)] = (n, total)

    def all_windows(self) -> dict[tuple[Any, int], tuple[int, int]]:
        """Closed windows and, as at the end of the input, the open ones."""
        out = dict(self.closed)
        for (k, w), (n, total) in self.open.items():
            out[(k, w * self.size)] = (n, total)
        return out
