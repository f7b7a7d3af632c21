"""Prometheus collectors reading a pipeline's and an ingestion server's own counters.

A scrape arrives on an HTTP server's thread, while the counters belong to the event loop
that runs the pipeline (its channels, its nodes' counters: nothing there takes locks). So
the snapshot is taken *on that loop* (:func:`on_loop`): one callback between two steps
of the pipeline, consistent across nodes, after which the Prometheus families are built
on the scraping thread. A pipeline not running (not started yet, or over) is read
directly: nothing changes it then.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .._executor import ExecutorState, PipelineExecutor
from .._metrics import LATENCY_BUCKETS, NodeMetrics, PipelineMetrics

if TYPE_CHECKING:
    from ..ingest import IngestServer
    from ..ingest._stats import ServerMetrics

__all__ = ["IngestCollector", "PipelineCollector", "on_loop"]

T = TypeVar("T")

#: What a node's messages became, as the ``outcome`` label of asyncpipe_node_messages_total.
OUTCOMES = ("received", "emitted", "committed", "filtered", "skipped")
_BOUNDS = [str(bound) for bound in LATENCY_BUCKETS] + ["+Inf"]


def on_loop(loop: asyncio.AbstractEventLoop | None, read: Callable[[], T], timeout: float) -> T:
    """``read()`` run on ``loop`` while it runs (from any thread), else right here.

    Raises ``TimeoutError`` if the loop does not get to it within ``timeout`` seconds (a
    loop blocked that long: the scrape fails rather than read state being changed)."""
    if loop is None or loop.is_closed() or not loop.is_running():
        return read()
    try:
        if asyncio.get_running_loop() is loop:
            return read()
    except RuntimeError:
        pass  # no loop in this thread: the usual case, an HTTP server's thread
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    def call() -> None:
        if done.set_running_or_notify_cancel():
            try:
                done.set_result(read())
            except Exception as exc:  # handed to the scraping thread, which raises it
                done.set_exception(exc)

    try:
        loop.call_soon_threadsafe(call)
    except RuntimeError:  # closed in the meantime: nothing runs it any more
        return read()
    try:
        return done.result(timeout)
    except TimeoutError:
        done.cancel()
        raise TimeoutError(
            f"asyncpipe metrics: the pipeline's event loop did not answer within {timeout}s"
        ) from None


def _loop_of(executor: PipelineExecutor) -> asyncio.AbstractEventLoop | None:
    task = executor._run_task  # set while (and after) it runs, on the loop running it
    return None if task is None else task.get_loop()


def _histogram(name: str, doc: str, label: str) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, labels=[label])


def _add_histogram(
    family: HistogramMetricFamily, label: str, buckets: tuple[int, ...], total: float
) -> None:
    counts = buckets or (0,) * len(_BOUNDS)
    family.add_metric([label], list(zip(_BOUNDS, counts, strict=True)), total)


class PipelineCollector:
    """Per-node counters, gauges and the handler-latency histogram of ``executor``, read
    from ``executor.metrics()`` at each scrape (see ``docs/metrics.md`` for the names).

    ``timeout``: seconds a scrape waits for the pipeline's event loop to take the snapshot.
    """

    def __init__(self, executor: PipelineExecutor, *, timeout: float = 5.0) -> None:
        self.executor = executor
        self.timeout = timeout

    def describe(self) -> Iterable[Metric]:
        """The metric families, without samples (so a registry can check name clashes)."""
        return list(_pipeline_families(None))

    def collect(self) -> Iterable[Metric]:
        snapshot = on_loop(_loop_of(self.executor), self.executor.metrics, self.timeout)
        return list(_pipeline_families(snapshot))


def _node_families(nodes: Iterable[NodeMetrics]) -> Iterator[Metric]:
    messages = CounterMetricFamily(
        "asyncpipe_node_messages",
        "Messages per node and outcome: received, emitted downstream, committed by a sink, "
        "filtered (the handler returned None), skipped (failed under on_error='skip').",
        labels=["node", "outcome"],
    )
    counters = {
        field: CounterMetricFamily(f"asyncpipe_node_{field}", doc, labels=["node"])
        for field, doc in (
            ("dead_letters", "Dead letters written for the node (a message or one item)."),
            ("errors", "Handler calls that raised, every attempt counted."),
            ("retries", "Handler calls made again after an error."),
        )
    }
    gauges = {
        field: GaugeMetricFamily(f"asyncpipe_node_{name}", doc, labels=["node"])
        for field, name, doc in (
            ("busy", "busy_workers", "Handler calls in progress."),
            ("workers", "workers", "Handler calls the node may run at once (workers=)."),
            ("queue_depth", "queue_depth", "Messages waiting in the node's input channel."),
            ("queue_capacity", "queue_capacity", "Capacity of the node's input channel."),
            (
                "queue_high_water",
                "queue_high_water",
                "Most messages ever waiting in the node's input channel.",
            ),
        )
    }
    latency = _histogram(
        "asyncpipe_node_handler_seconds",
        "Seconds per handler call, over the calls timed (light on-loop handlers: the first "
        "256, then one in 16).",
        "node",
    )
    for node in nodes:
        for outcome in OUTCOMES:
            messages.add_metric([node.name, outcome], getattr(node, outcome))
        for field, family in counters.items():
            family.add_metric([node.name], getattr(node, field))
        source = not node.queue_capacity  # no input channel, no handler calls to time
        for field, gauge in gauges.items():
            if not (source and field.startswith("queue")):
                gauge.add_metric([node.name], getattr(node, field))
        if not source:
            _add_histogram(latency, node.name, node.latency_buckets, node.latency_sum)
    yield messages
    yield from counters.values()
    yield from gauges.values()
    yield latency


def _pipeline_families(snapshot: PipelineMetrics | None) -> Iterator[Metric]:
    yield from _node_families(snapshot.nodes.values() if snapshot else ())
    state = GaugeMetricFamily(
        "asyncpipe_pipeline_state",
        "1 for the pipeline's current state, 0 for the others.",
        labels=["state"],
    )
    uptime = GaugeMetricFamily("asyncpipe_pipeline_uptime_seconds", "Seconds since it started.")
    restarts = CounterMetricFamily(
        "asyncpipe_pipeline_worker_restarts", "Worker processes replaced after a crash."
    )
    if snapshot is not None:
        for each in ExecutorState:
            state.add_metric([str(each)], 1.0 if str(each) == snapshot.state else 0.0)
        uptime.add_metric([], snapshot.uptime)
        restarts.add_metric([], snapshot.worker_restarts)
    yield from (state, uptime, restarts)


class IngestCollector:
    """Batches answered by ``server`` per method and status, their latency, the items
    received and acknowledged, read from ``server.metrics()`` at each scrape."""

    def __init__(self, server: IngestServer, *, timeout: float = 5.0) -> None:
        self.server = server
        self.timeout = timeout

    def describe(self) -> Iterable[Metric]:
        return list(_ingest_families(None))

    def collect(self) -> Iterable[Metric]:
        snapshot = on_loop(_loop_of(self.server.executor), self.server.metrics, self.timeout)
        return list(_ingest_families(snapshot))


def _ingest_families(snapshot: ServerMetrics | None) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "asyncpipe_grpc_requests",
        "Batches answered (a unary call, or one batch on a stream) per method and status.",
        labels=["method", "code"],
    )
    latency = _histogram(
        "asyncpipe_grpc_request_seconds", "Seconds from a batch's arrival to its reply.", "method"
    )
    items = {
        field: CounterMetricFamily(f"asyncpipe_grpc_items_{field}", doc, labels=["method"])
        for field, doc in (
            ("received", "Items in the batches received, refused batches included."),
            ("acknowledged", "Items the replies acknowledged as processed."),
            ("rejected", "Items the replies listed as rejected or failed."),
        )
    }
    in_flight = GaugeMetricFamily("asyncpipe_grpc_calls_in_flight", "Calls being handled now.")
    serving = GaugeMetricFamily("asyncpipe_grpc_serving", "1 while the server takes batches.")
    if snapshot is not None:
        for name, method in snapshot.methods.items():
            for code, count in {"OK": 0, **method.requests}.items():
                requests.add_metric([name, code], count)
            _add_histogram(latency, name, method.latency_buckets, method.latency_sum)
            for field, family in items.items():
                family.add_metric([name], getattr(method, f"items_{field}"))
        in_flight.add_metric([], snapshot.calls_in_flight)
        serving.add_metric([], 1.0 if snapshot.serving else 0.0)
    yield from (requests, latency, *items.values(), in_flight, serving)
