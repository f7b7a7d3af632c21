"""Prometheus exposition: a running pipeline's endpoint scraped over HTTP equals
``executor.metrics()``; the endpoint's lifecycle; snapshots taken on the pipeline's loop."""

from __future__ import annotations

import asyncio
import socket
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest
from pipelines import TIMEOUT
from prometheus_client import CollectorRegistry, generate_latest
from scraping import scrape, value

from asyncpipe import LATENCY_BUCKETS, HandlerNode, PipelineExecutor
from asyncpipe.metrics import PipelineCollector, metrics_registry, serve_metrics
from asyncpipe.metrics._collector import OUTCOMES, on_loop
from asyncpipe.testing import CollectingSink


class FailOnce:
    """Fails the first call for each message: one retry each."""

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def __call__(self, x: int) -> int:
        if x not in self.seen:
            self.seen.add(x)
            raise ConnectionError("transient")
        return x


def keep(x: int) -> int | None:
    if x == 7:
        raise ValueError("seven is poison")
    return x if x % 3 else None  # multiples of 3 filtered


def workload(sink: Any) -> PipelineExecutor:
    """numbers(0..19) -> flaky (retries each once) -> keep (filters, dead-letters 7) -> sink"""
    numbers = HandlerNode("numbers", list(range(20)))
    flaky = HandlerNode("flaky", FailOnce(), [numbers], retries=1, backoff=0.0)
    kept = HandlerNode("keep", keep, [flaky])
    out = HandlerNode("sink", sink, [kept])
    return PipelineExecutor([numbers], [flaky, kept, out])


async def test_a_scrape_after_a_known_workload_equals_metrics() -> None:
    sink = CollectingSink()
    executor = workload(sink)
    with serve_metrics(executor) as endpoint:
        async with asyncio.timeout(TIMEOUT):
            await executor.run()
            samples = await scrape(endpoint.url)
    metrics = executor.metrics()
    # The workload's known figures...
    assert metrics["flaky"].retries == 20 and metrics["flaky"].errors == 20
    assert metrics["keep"].dead_letters == 1 and metrics["keep"].filtered == 7
    assert metrics["sink"].committed == len(sink.items) == 12
    # ...are what the endpoint says, counter by counter.
    for name, node in metrics.nodes.items():
        for outcome in OUTCOMES:
            assert value(
                samples, "asyncpipe_node_messages_total", node=name, outcome=outcome
            ) == getattr(node, outcome), (name, outcome)
        for field in ("dead_letters", "errors", "retries"):
            assert value(samples, f"asyncpipe_node_{field}_total", node=name) == getattr(
                node, field
            )
        assert value(samples, "asyncpipe_node_workers", node=name) == node.workers
        assert value(samples, "asyncpipe_node_busy_workers", node=name) == 0
    for name in ("flaky", "keep", "sink"):
        node = metrics[name]
        assert value(samples, "asyncpipe_node_queue_capacity", node=name) == node.queue_capacity
        assert value(samples, "asyncpipe_node_queue_depth", node=name) == 0
        assert value(samples, "asyncpipe_node_queue_high_water", node=name) == node.queue_high_water
        count = value(samples, "asyncpipe_node_handler_seconds_count", node=name)
        assert count == node.latency_count > 0
        assert value(samples, "asyncpipe_node_handler_seconds_bucket", node=name, le="+Inf") == (
            count
        )
        assert value(samples, "asyncpipe_node_handler_seconds_sum", node=name) == pytest.approx(
            node.latency_sum
        )
    # A source has no input channel: no queue figures rather than zeros that mislead.
    assert ("asyncpipe_node_queue_capacity", (("node", "numbers"),)) not in samples
    assert ("asyncpipe_node_handler_seconds_count", (("node", "numbers"),)) not in samples
    assert value(samples, "asyncpipe_pipeline_state", state="closed") == 1
    assert value(samples, "asyncpipe_pipeline_state", state="running") == 0
    assert value(samples, "asyncpipe_pipeline_worker_restarts_total") == 0


async def test_a_scrape_while_running_shows_the_busy_worker_and_the_queue() -> None:
    arrived = asyncio.Event()
    release = asyncio.Event()

    async def hold(x: int) -> int:
        arrived.set()
        await release.wait()
        return x

    ingest = HandlerNode("ingest")
    held = HandlerNode("hold", hold, [ingest], capacity=8)
    executor = PipelineExecutor([ingest], [held])
    async with asyncio.timeout(TIMEOUT), executor:
        with serve_metrics(executor) as endpoint:
            await executor.wait_started()
            receipts = [await executor.submit("ingest", i) for i in range(5)]
            await arrived.wait()  # one message in the handler, the rest waiting behind it
            samples = await scrape(endpoint.url)
            assert value(samples, "asyncpipe_node_busy_workers", node="hold") == 1
            assert value(samples, "asyncpipe_node_queue_depth", node="hold") == 4
            assert value(samples, "asyncpipe_node_queue_capacity", node="hold") == 8
            assert value(samples, "asyncpipe_pipeline_state", state="running") == 1
            release.set()
            for receipt in receipts:
                await receipt
            samples = await scrape(endpoint.url)
            assert value(
                samples, "asyncpipe_node_messages_total", node="hold", outcome="committed"
            ) == (5)
            assert value(samples, "asyncpipe_node_busy_workers", node="hold") == 0


async def test_the_histogram_buckets_are_cumulative_at_the_documented_bounds() -> None:
    executor = workload(CollectingSink())
    await asyncio.wait_for(executor.run(), TIMEOUT)
    node = executor.metrics()["keep"]
    assert len(node.latency_buckets) == len(LATENCY_BUCKETS) + 1
    assert list(node.latency_buckets) == sorted(node.latency_buckets)
    assert node.latency_buckets[-1] == node.latency_count == node.received
    registry = CollectorRegistry()
    registry.register(PipelineCollector(executor))
    text = generate_latest(registry).decode()  # on the loop's own thread: read directly
    for bound, count in zip(LATENCY_BUCKETS, node.latency_buckets, strict=False):
        line = f'asyncpipe_node_handler_seconds_bucket{{le="{bound}",node="keep"}} {count}.0'
        assert line in text


def test_a_registry_refuses_the_same_pipeline_twice() -> None:
    executor = workload(CollectingSink())
    registry = metrics_registry(executor, process=False)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(PipelineCollector(executor))


async def test_port_zero_binds_a_free_port_and_close_stops_listening() -> None:
    executor = workload(CollectingSink())
    endpoint = serve_metrics(executor, 0)
    assert endpoint.port > 0
    assert endpoint.url == f"http://127.0.0.1:{endpoint.port}/metrics"
    samples = await scrape(endpoint.url)  # before the pipeline runs: all zero
    assert value(samples, "asyncpipe_pipeline_state", state="created") == 1
    assert "process_cpu_seconds_total" in {name for name, _ in samples}
    await asyncio.to_thread(endpoint.close)
    endpoint.close()  # again: nothing to do
    with pytest.raises(urllib.error.URLError):
        await asyncio.to_thread(urllib.request.urlopen, endpoint.url, timeout=5)


def test_a_port_in_use_is_an_oserror() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            serve_metrics(workload(CollectingSink()), taken.getsockname()[1])


async def test_a_loop_that_does_not_answer_fails_the_scrape_within_the_timeout() -> None:
    loop = asyncio.get_running_loop()
    outcome: list[BaseException] = []
    finished = threading.Event()

    def scrape_from_a_thread() -> None:
        try:
            on_loop(loop, lambda: "read", timeout=0.2)
        except TimeoutError as exc:
            outcome.append(exc)
        finally:
            finished.set()

    thread = threading.Thread(target=scrape_from_a_thread)
    thread.start()
    finished.wait(TIMEOUT)  # blocks this loop on purpose: it cannot answer
    thread.join()
    assert len(outcome) == 1 and "did not answer within 0.2s" in str(outcome[0])
    await asyncio.sleep(0)  # the abandoned read runs now, harmlessly


async def test_a_read_on_the_loop_from_another_thread_returns_its_result() -> None:
    loop = asyncio.get_running_loop()
    threads: list[int] = []

    def read() -> int:
        threads.append(threading.get_ident())
        return 42

    assert await asyncio.to_thread(on_loop, loop, read, 5.0) == 42
    assert threads == [threading.get_ident()]  # it ran on the loop's thread
