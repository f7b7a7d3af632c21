"""The table of ``python -m bench.ingest``: one row per rpc and concurrency level."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from .load import Sample
from .servers import SIDES

__all__ = ["HEADER", "LEGEND", "TARGET", "Level"]

TARGET = 0.8  # asyncpipe requests/s over the raw echo's

HEADER = (
    "rpc    conc |  raw rps  items/s  p50ms  p99ms srv-us cli-us"
    " |  ap. rps  items/s  p50ms  p99ms srv-us cli-us | ratio"
)
LEGEND = (
    "ap.: asyncpipe; p50/p99: call latency; srv-us / cli-us: CPU per request (µs) of "
    "the server process / of the load generator; ratio: median of the per-pair "
    f"asyncpipe/raw requests/s (target >= {TARGET}x)"
)


@dataclass
class Level:
    rpc: str
    concurrency: int
    samples: dict[str, list[Sample]] = field(default_factory=lambda: {s: [] for s in SIDES})

    def ratios(self) -> list[float]:
        raw, ours = self.samples["raw"], self.samples["asyncpipe"]
        return [o.rps / r.rps for r, o in zip(raw, ours, strict=True) if r.rps]

    def ratio(self) -> float:
        """The median of the per-pair ratios (0 without a pair)."""
        return statistics.median(self.ratios()) if self.ratios() else 0.0

    def missed(self) -> bool:
        return round(self.ratio(), 2) < TARGET  # judged on the figure as printed

    def row(self, items: int) -> str:
        cells = [f"{self.rpc:6} {self.concurrency:>4}"]
        for side in SIDES:
            cells.append(_cells(self.samples[side], items))
        ratio = self.ratio()
        return " | ".join(cells) + f" | {ratio:5.2f}x {'MISSED' if self.missed() else 'ok'}"


def _cells(runs: list[Sample], items: int) -> str:
    rps = statistics.median(s.rps for s in runs)
    p50 = statistics.median(s.percentile(0.50) for s in runs) * 1000
    p99 = statistics.median(s.percentile(0.99) for s in runs) * 1000
    cpu = [s.server_cpu / s.requests for s in runs if s.server_cpu and s.requests]
    srv = f"{statistics.median(cpu) * 1e6:6.0f}" if cpu else "     ?"
    cli = statistics.median(s.client_cpu / s.requests for s in runs if s.requests) * 1e6
    return f"{rps:8,.0f} {rps * items / 1000:6,.0f}k {p50:6.2f} {p99:6.2f} {srv} {cli:6.0f}"
