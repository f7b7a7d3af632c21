"""Health says SERVING only once a batch sent now is answered promptly (issue 11, item 8)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import grpc
import pytest
from ingest_handlers import SetUpWhenReleased
from ingest_helpers import TIMEOUT, rows, transactions
from ingest_pipeline import BANK_NODES, bank_pipeline

from asyncpipe import BaseHandler, HandlerNode, PipelineExecutor
from asyncpipe.connectors import SqliteSink
from asyncpipe.demo.service import SERVICE, BankClient, bank_server
from asyncpipe.ingest import IngestClient


class SlowSetup(BaseHandler):
    """An on-loop pass-through whose setup() waits for ``released``."""

    def __init__(self) -> None:
        self.released = asyncio.Event()

    async def setup(self) -> None:
        await self.released.wait()

    async def handle(self, data: Any) -> Any:
        return data


async def health(client: IngestClient) -> tuple[str, str]:
    return await client.health(), await client.health(SERVICE.full_name)


async def test_not_serving_until_the_handlers_are_set_up(tmp_path: Path) -> None:
    db = tmp_path / "bank.db"
    stage = SlowSetup()
    executor = bank_pipeline(db, stage=stage)
    async with asyncio.timeout(TIMEOUT):
        running = asyncio.create_task(executor.run())
        server = bank_server(executor, **BANK_NODES)
        await server.start()
        client = BankClient(server.address, retries=0)
        try:
            assert await health(client) == ("NOT_SERVING", "NOT_SERVING")
            with pytest.raises(grpc.aio.AioRpcError) as early:
                await client.send_transactions(transactions(2), batch_id="early", timeout=0.2)
            assert early.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "still starting" in (early.value.details() or "")
            stage.released.set()
            await server.ready.wait()
            assert await health(client) == ("SERVING", "SERVING")
            reply = await client.send_transactions(transactions(2), batch_id="late")
            assert reply.success
        finally:
            await client.close()
            await server.stop(grace=5)
            executor.stop()
            await running
    assert rows(db, "SELECT id FROM transactions ORDER BY id") == [(1,), (2,)]


def cpu_pipeline(db: Path, fifo: Path) -> PipelineExecutor:
    ingress = HandlerNode("transactions")
    warm = HandlerNode("warm", SetUpWhenReleased(str(fifo)), [ingress], cpu=True)
    schema = {"id": "INTEGER", "client_id": "INTEGER", "date": "TEXT", "amount": "REAL"}
    sink = SqliteSink(db, "transactions", key="id", schema=schema)
    return PipelineExecutor([ingress], [warm, HandlerNode("store", sink, [warm])], max_workers=1)


async def test_not_serving_until_the_worker_processes_are_set_up(tmp_path: Path) -> None:
    db = tmp_path / "bank.db"
    fifo = tmp_path / "release"
    os.mkfifo(fifo)
    executor = cpu_pipeline(db, fifo)
    async with asyncio.timeout(TIMEOUT):
        running = asyncio.create_task(executor.run())
        server = bank_server(executor, transactions="transactions")
        await server.start()
        client = BankClient(server.address, retries=0)
        try:
            assert await health(client) == ("NOT_SERVING", "NOT_SERVING")
            assert not server.ready.is_set()
            # Opening the FIFO for writing lets the worker's setup() return.
            (await asyncio.to_thread(fifo.open, "wb")).close()
            await server.ready.wait()
            assert await health(client) == ("SERVING", "SERVING")
            reply = await client.send_transactions(transactions(1), batch_id="one")
            assert reply.success
        finally:
            await client.close()
            await server.stop(grace=5)
            executor.stop()
            await running
    assert rows(db, "SELECT id FROM transactions") == [(1,)]
