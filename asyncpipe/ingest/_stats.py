"""The server's own counts: batches answered per method and status, their latency, items.

A *request* here is one batch: a unary call, or one batch on a stream (which gets one
reply of its own). Its status is the call's for a unary call; on a stream it is the one
its reply carries (``OK`` when ``success``, else the status name the reply's ``message``
starts with). A batch taken but failed in the pipeline is ``OK`` with ``success`` false,
as on a unary call: its failed items count as rejected.

Counting happens where the servicer answers (no interceptor: a ``grpc.aio`` interceptor
runs for every call, health checks included, and sees a stream as one call): a few
additions and a bisect per batch. Every container is made full-size up front (one slot
per status code), so a snapshot taken on another thread never meets a resizing dict.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from .._metrics import LATENCY_BUCKETS, cumulative
from ._codec import Malformed
from ._service import Method

if TYPE_CHECKING:
    from ._server import IngestServer

__all__ = ["CODES", "MethodMetrics", "MethodStats", "ServerMetrics", "ServerStats", "counted_unary"]

#: Every status code, in order; counts are kept in a list indexed like it (an enum's hash
#: costs a Python call, and a batch is counted on every call).
CODES = tuple(grpc.StatusCode)
_INDEX = {code: index for index, code in enumerate(CODES)}
_BY_NAME = {code.name: index for index, code in enumerate(CODES)}
_OK = _INDEX[grpc.StatusCode.OK]
_UNKNOWN = _INDEX[grpc.StatusCode.UNKNOWN]
_CANCELLED = _INDEX[grpc.StatusCode.CANCELLED]

Behaviour = Callable[[Any, Any], Awaitable[Any]]


class MethodStats:
    """Mutable counts of one method (owned by the server's event loop; no locks)."""

    __slots__ = (
        "buckets",
        "codes",
        "items_acknowledged",
        "items_received",
        "items_rejected",
        "seconds",
    )

    def __init__(self) -> None:
        self.codes = [0] * len(CODES)  # per status code, indexed as CODES
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.seconds = 0.0
        self.items_received = 0
        self.items_acknowledged = 0
        self.items_rejected = 0

    def record(self, code: int, seconds: float, received: int, acked: int, rejected: int) -> None:
        """Count one batch answered with ``CODES[code]``."""
        self.codes[code] += 1
        self.seconds += seconds
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.items_received += received
        self.items_acknowledged += acked
        self.items_rejected += rejected

    def replied(self, reply: Any, seconds: float) -> None:
        """Count a stream's batch from the reply it gets."""
        if reply.success:
            code = _OK
        else:
            code = _BY_NAME.get(reply.message.partition(":")[0], _OK)
        if code == _OK:
            self.record(
                code, seconds, reply.items_received, reply.items_processed, reply.items_rejected
            )
        else:
            self.record(code, seconds, reply.items_received, 0, 0)


class ServerStats:
    """The counts of every method of a served service, by method name."""

    def __init__(self, methods: Mapping[str, Method]) -> None:
        self.methods = {name: MethodStats() for name in methods}


@dataclass(frozen=True, slots=True)
class MethodMetrics:
    """A snapshot of one method's batches since the server was made.

    ``requests``: batches answered per status name (``"OK"``, ``"INVALID_ARGUMENT"``...,
    only those seen); ``items_received``: items in every batch decoded, refused ones
    included; ``items_acknowledged``: items the replies say were processed (stored, or
    accepted with ``ack="accepted"``); ``items_rejected``: items the replies list as
    rejected or failed. ``latency_*``: the histogram of seconds per batch, from the call
    (or the batch read on a stream) to its reply, as :class:`asyncpipe.NodeMetrics` has.
    """

    name: str
    requests: dict[str, int]
    items_received: int
    items_acknowledged: int
    items_rejected: int
    latency_count: int
    latency_sum: float
    latency_buckets: tuple[int, ...]

    @property
    def errors(self) -> int:
        """Batches answered with a status other than ``OK``."""
        return sum(count for code, count in self.requests.items() if code != "OK")

    @classmethod
    def of(cls, name: str, stats: MethodStats) -> MethodMetrics:
        buckets = cumulative(stats.buckets)
        return cls(
            name=name,
            requests={code.name: n for code, n in zip(CODES, stats.codes, strict=True) if n},
            items_received=stats.items_received,
            items_acknowledged=stats.items_acknowledged,
            items_rejected=stats.items_rejected,
            latency_count=buckets[-1],
            latency_sum=stats.seconds,
            latency_buckets=buckets,
        )


@dataclass(frozen=True, slots=True)
class ServerMetrics:
    """A snapshot of an :class:`IngestServer`: per method, and calls in flight now."""

    service: str
    methods: dict[str, MethodMetrics]
    calls_in_flight: int
    serving: bool

    def __getitem__(self, method: str) -> MethodMetrics:
        return self.methods[method]

    @property
    def requests(self) -> int:
        """Batches answered, every method and status."""
        return sum(sum(m.requests.values()) for m in self.methods.values())

    @property
    def errors(self) -> dict[str, int]:
        """Batches answered with a status other than ``OK``, by status name."""
        found: dict[str, int] = {}
        for method in self.methods.values():
            for code, count in method.requests.items():
                if code != "OK":
                    found[code] = found.get(code, 0) + count
        return found

    @classmethod
    def of(cls, server: IngestServer) -> ServerMetrics:
        return cls(
            service=server.service_name,
            methods={name: MethodMetrics.of(name, s) for name, s in server.stats.methods.items()},
            calls_in_flight=server.calls.count,
            serving=server.ready.is_set() and not server.closing.is_set(),
        )


def counted_unary(behaviour: Behaviour, stats: MethodStats, method: Method) -> Behaviour:
    """``behaviour`` (a unary method's), counting each call in ``stats``."""
    items = None if method.route is None else method.route.items

    async def unary(request: Any, context: Any) -> Any:
        started = time.perf_counter()
        code = _UNKNOWN
        reply = None
        try:
            reply = await behaviour(request, context)
            code = _OK
            return reply
        except grpc.aio.AbortError:
            code = _INDEX.get(context.code(), code)
            raise
        except asyncio.CancelledError:
            code = _CANCELLED
            raise
        finally:
            seconds = time.perf_counter() - started
            if reply is not None:
                stats.record(
                    code, seconds, reply.items_received, reply.items_processed, reply.items_rejected
                )
            else:
                received = 0
                if items is not None and not isinstance(request, Malformed):
                    received = len(getattr(request, items))
                stats.record(code, seconds, received, 0, 0)

    return unary
