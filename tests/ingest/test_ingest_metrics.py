"""The server's counts -- batches per method and status, latency, items -- in
``server.metrics()`` and scraped from the Prometheus endpoint, after known calls."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from ingest_helpers import serving, transactions
from ingest_pipeline import bank_pipeline
from scraping import scrape, value

from asyncpipe.demo.service import transaction_batch
from asyncpipe.metrics import serve_metrics

TOO_LONG = "x" * 129  # a batch_id the server refuses (INVALID_ARGUMENT)


class Valve:
    """A pipeline stage that holds messages while closed."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.arrived = asyncio.Event()

    async def __call__(self, message: Any) -> Any:
        self.arrived.set()
        await self.open.wait()
        return message


async def test_unary_calls_are_counted_by_status_with_their_items(tmp_path: Path) -> None:
    valve = Valve()
    valve.open.set()
    pipeline = bank_pipeline(tmp_path / "bank.db", stage=valve)
    async with serving(pipeline, max_in_flight=1, client_options={"retries": 0}) as served:
        client = served.client
        assert (await client.send_transactions(transactions(5, 1))).items_processed == 5
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.send_transactions(transactions(2, 10), batch_id=TOO_LONG)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # The only slot held by a batch the valve keeps: the next one is not taken in time.
        valve.open.clear()
        valve.arrived.clear()
        held = asyncio.create_task(client.send_transactions(transactions(3, 20)))
        await valve.arrived.wait()
        with pytest.raises(grpc.aio.AioRpcError) as saturated:
            await client.send_transactions(transactions(4, 30), timeout=0.5)
        assert saturated.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        valve.open.set()
        assert (await held).success

        method = served.server.metrics()["IngestTransactions"]
        assert method.requests == {"OK": 2, "INVALID_ARGUMENT": 1, "RESOURCE_EXHAUSTED": 1}
        assert method.errors == 2
        assert (method.items_received, method.items_acknowledged) == (5 + 2 + 3 + 4, 5 + 3)
        assert method.latency_count == 4 and method.latency_buckets[-1] == 4
        assert served.server.metrics()["IngestClients"].requests == {}

        with serve_metrics(served.executor, server=served.server) as endpoint:
            samples = await scrape(endpoint.url)
        transactions_ = {"method": "IngestTransactions"}
        for code, count in (("OK", 2), ("INVALID_ARGUMENT", 1), ("RESOURCE_EXHAUSTED", 1)):
            assert value(samples, "asyncpipe_grpc_requests_total", code=code, **transactions_) == (
                count
            )
        # Every method is there from the start, with OK at zero, so rate() works at once.
        assert (
            value(samples, "asyncpipe_grpc_requests_total", method="IngestScores", code="OK") == 0
        )
        assert value(samples, "asyncpipe_grpc_items_received_total", **transactions_) == 14
        assert value(samples, "asyncpipe_grpc_items_acknowledged_total", **transactions_) == 8
        assert value(samples, "asyncpipe_grpc_items_rejected_total", **transactions_) == 0
        assert value(samples, "asyncpipe_grpc_request_seconds_count", **transactions_) == 4
        assert value(samples, "asyncpipe_grpc_serving") == 1
        assert value(samples, "asyncpipe_grpc_calls_in_flight") == 0
        # The pipeline's own figures are served beside them.
        assert (
            value(samples, "asyncpipe_node_messages_total", node="stage", outcome="received") == 2
        )


async def test_stream_batches_are_counted_one_by_one_by_the_status_of_their_reply(
    tmp_path: Path,
) -> None:
    async with serving(bank_pipeline(tmp_path / "bank.db")) as served:
        async with served.client.stream() as stream:
            good = await stream.send(transaction_batch(transactions(3, 1), "good"))
            bad = await stream.send(transaction_batch(transactions(2, 10), TOO_LONG))
            invalid_item = transactions(2, 20)
            invalid_item[1]["currency"] = "XXX"
            partly = await stream.send(transaction_batch(invalid_item, "partly"))
        assert good.success and not bad.success and partly.success
        assert bad.message.startswith("INVALID_ARGUMENT: ")
        method = served.server.metrics()["IngestStream"]
        assert method.requests == {"OK": 2, "INVALID_ARGUMENT": 1}
        assert method.items_received == 3 + 2 + 2
        assert (method.items_acknowledged, method.items_rejected) == (3 + 1, 1)
        assert method.latency_count == 3
        # Counted under the method called, not the unary method of the same batches.
        assert served.server.metrics()["IngestTransactions"].requests == {}
        assert served.server.metrics().errors == {"INVALID_ARGUMENT": 1}
