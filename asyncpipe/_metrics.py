"""Per-node counters and latency samples, and the snapshots ``metrics()`` returns.

Each timed message also lands in a cumulative latency histogram (:data:`LATENCY_BUCKETS`):
a bisect and two additions where the sample is taken, so a Prometheus scrape
(:mod:`asyncpipe.metrics`) reads buckets that exist already instead of the hot path
updating a second set of counters.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._channel import ChannelStatistics

__all__ = ["LATENCY_BUCKETS", "NodeMetrics", "PipelineMetrics", "percentile"]

_SAMPLES = 1024  # latency samples kept per node (a ring: the most recent ones)

#: Upper bounds (seconds) of the latency histograms, from a light on-loop stage (tens of
#: microseconds) to a slow sink or gRPC call (seconds); a last bucket takes the rest.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


def cumulative(counts: Sequence[int]) -> tuple[int, ...]:
    """Counts per bucket (the last one: above every bound) made cumulative, Prometheus'
    ``le`` buckets; the last element is the total."""
    total = 0
    out = []
    for count in counts:
        total += count
        out.append(total)
    return tuple(out)


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile: the smallest value with at least ``fraction`` (0..1) of
    ``values`` at or below it; None for no values.

    asyncpipe's one percentile: node latencies and the load test's figures use it alike.
    """
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


class NodeStats:
    """Mutable counters owned by one node's runtime (single-threaded, no locks)."""

    __slots__ = (
        "buckets",
        "busy",
        "committed",
        "dead_letters",
        "emitted",
        "errors",
        "filtered",
        "latencies",
        "latency_sum",
        "received",
        "retries",
        "samples",
        "skipped",
    )

    def __init__(self) -> None:
        self.received = 0
        self.emitted = 0
        self.committed = 0
        self.filtered = 0
        self.errors = 0
        self.retries = 0
        self.dead_letters = 0
        self.skipped = 0
        self.busy = 0
        self.samples = 0
        self.latencies = [0.0] * _SAMPLES
        self.latency_sum = 0.0
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)

    def observe(self, seconds: float) -> None:
        self.latencies[self.samples % _SAMPLES] = seconds
        self.samples += 1
        self.latency_sum += seconds
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def percentile(self, fraction: float) -> float | None:
        """The nearest-rank percentile of the latency samples kept (None before any)."""
        return percentile(self.latencies[: min(self.samples, _SAMPLES)], fraction)


@dataclass(frozen=True, slots=True)
class NodeMetrics:
    """A snapshot of one node. Latencies are seconds per message: the percentiles over
    recent messages, the histogram (``latency_count``, ``latency_sum``, and
    ``latency_buckets``: cumulative counts at or below each of :data:`LATENCY_BUCKETS`,
    then the total) over every message timed since the start."""

    name: str
    received: int
    emitted: int
    committed: int
    filtered: int
    errors: int
    retries: int
    dead_letters: int
    skipped: int
    busy: int
    workers: int
    latency_p50: float | None
    latency_p99: float | None
    queue_depth: int
    queue_capacity: int
    queue_high_water: int
    latency_count: int = 0
    latency_sum: float = 0.0
    latency_buckets: tuple[int, ...] = ()

    @classmethod
    def of(
        cls, name: str, stats: NodeStats, workers: int, queue: ChannelStatistics | None
    ) -> NodeMetrics:
        """The snapshot of a node's counters and of its input channel (None: a source)."""
        return cls(
            name=name,
            received=stats.received,
            emitted=stats.emitted,
            committed=stats.committed,
            filtered=stats.filtered,
            errors=stats.errors,
            retries=stats.retries,
            dead_letters=stats.dead_letters,
            skipped=stats.skipped,
            busy=stats.busy,
            workers=workers,
            latency_p50=stats.percentile(0.50),
            latency_p99=stats.percentile(0.99),
            queue_depth=queue.depth if queue else 0,
            queue_capacity=queue.capacity if queue else 0,
            queue_high_water=queue.high_water if queue else 0,
            latency_count=stats.samples,
            latency_sum=stats.latency_sum,
            latency_buckets=cumulative(stats.buckets),
        )


@dataclass(frozen=True, slots=True)
class PipelineMetrics:
    """A snapshot of the whole pipeline: ``nodes`` by name, plus pipeline-wide figures."""

    state: str
    nodes: dict[str, NodeMetrics]
    worker_restarts: int
    uptime: float

    def __getitem__(self, node: str) -> NodeMetrics:
        return self.nodes[node]

    def as_dict(self) -> dict[str, Any]:
        """Plain data, ready for ``json.dumps``."""
        return asdict(self)
