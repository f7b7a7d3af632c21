"""Metrics: per-node counters, latencies and queue figures, and their plain-data form."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from asyncpipe import HandlerNode, NodeMetrics, PipelineExecutor, PipelineMetrics
from asyncpipe._metrics import percentile
from asyncpipe.testing import CollectingSink, run_handler, run_pipeline


def odd_only(x: int) -> int | None:
    return x if x % 2 else None


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x


class FailOnce:
    def __init__(self) -> None:
        self.failed: set[Any] = set()

    def __call__(self, message: Any) -> Any:
        if message not in self.failed:
            self.failed.add(message)
            raise ConnectionError("transient")
        return message


async def test_received_and_emitted_count_messages_in_and_out() -> None:
    run = await run_handler(odd_only, range(6), timeout=10)
    node = run.metrics["handler"]
    assert node.received == 6
    assert node.emitted == 3
    assert run.metrics["source"].emitted == 6


async def test_generator_emits_count_every_output() -> None:
    def twice(x: int) -> Any:
        yield x
        yield x

    run = await run_handler(twice, range(4), timeout=10)
    assert run.metrics["handler"].emitted == 8
    assert run.metrics["sink"].received == 8


async def test_committed_is_counted_at_the_sink() -> None:
    run = await run_handler(odd_only, range(6), timeout=10)
    assert run.metrics["sink"].committed == 3
    assert run.metrics["handler"].committed == 0


async def test_filtered_counts_messages_a_handler_dropped() -> None:
    run = await run_handler(odd_only, range(6), timeout=10)
    assert run.metrics["handler"].filtered == 3


async def test_dead_letters_and_errors_are_counted() -> None:
    run = await run_handler(fail_on_three, range(5), timeout=10)
    node = run.metrics["handler"]
    assert node.dead_letters == 1
    assert node.errors == 1
    assert run.metrics["sink"].committed == 4


async def test_retries_are_counted() -> None:
    run = await run_handler(FailOnce(), ["a", "b"], retries=1, backoff=0, timeout=10)
    node = run.metrics["handler"]
    assert node.retries == 2
    assert node.errors == 2
    assert node.dead_letters == 0
    assert run.outputs == ["a", "b"]


async def test_latency_percentiles_are_reported_after_traffic() -> None:
    run = await run_handler(odd_only, range(10), timeout=10)
    node = run.metrics["handler"]
    assert node.latency_p50 is not None
    assert node.latency_p99 is not None
    assert 0 <= node.latency_p50 <= node.latency_p99


@pytest.mark.parametrize(
    ("values", "fraction", "expected"),
    [
        ([3.0, 1.0], 0.5, 1.0),  # the smallest value with half the values at or below it
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),
        ([1.0, 2.0, 3.0, 4.0], 0.51, 3.0),
        ([float(i) for i in range(1, 101)], 0.99, 99.0),
        ([float(i) for i in range(1, 101)], 0.95, 95.0),
        ([5.0], 0.99, 5.0),
        ([2.0, 1.0], 0.0, 1.0),
        ([2.0, 1.0], 1.0, 2.0),
        ([], 0.5, None),
    ],
)
def test_percentile_is_nearest_rank(
    values: list[float], fraction: float, expected: float | None
) -> None:
    assert percentile(values, fraction) == expected


def test_latency_percentiles_are_none_before_any_traffic() -> None:
    ingest = HandlerNode("ingest")
    sink = HandlerNode("sink", CollectingSink(), [ingest])
    metrics = PipelineExecutor([ingest], [sink]).metrics()
    assert metrics["sink"].latency_p50 is None
    assert metrics["sink"].latency_p99 is None


async def test_queue_capacity_is_the_node_capacity() -> None:
    run = await run_handler(odd_only, range(3), capacity=7, timeout=10)
    assert run.metrics["handler"].queue_capacity == 7


async def test_queue_high_water_reaches_but_never_exceeds_capacity() -> None:
    async def slow(x: int) -> int:
        for _ in range(3):
            await asyncio.sleep(0)
        return x

    run = await run_handler(slow, range(20), capacity=2, timeout=10)
    node = run.metrics["handler"]
    assert node.queue_high_water == 2
    assert node.queue_high_water <= node.queue_capacity


async def test_workers_are_reported() -> None:
    run = await run_handler(odd_only, range(3), workers=3, timeout=10)
    assert run.metrics["handler"].workers == 3


async def test_metrics_snapshot_has_a_node_per_pipeline_node() -> None:
    src = HandlerNode("src", [1, 2])
    sink = HandlerNode("sink", CollectingSink(), [src])
    executor = await run_pipeline([src], [sink], timeout=10)
    metrics = executor.metrics()
    assert isinstance(metrics, PipelineMetrics)
    assert set(metrics.nodes) == {"src", "sink"}
    assert all(isinstance(node, NodeMetrics) for node in metrics.nodes.values())
    assert metrics.state == "closed"
    assert metrics.worker_restarts == 0


async def test_as_dict_is_json_serialisable() -> None:
    run = await run_handler(fail_on_three, range(5), timeout=10)
    data = json.loads(json.dumps(run.metrics.as_dict()))
    assert data["state"] == "closed"
    assert data["nodes"]["handler"]["dead_letters"] == 1
    assert data["nodes"]["sink"]["committed"] == 4
