"""The ingestion server: a real grpc.aio server on 127.0.0.1 feeding a real pipeline."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from ingest_helpers import TIMEOUT, make_cpf, rows, serving, transactions
from ingest_pipeline import bank_pipeline

from asyncpipe import reject
from asyncpipe.demo.service import SERVICE, BankClient, bank_server, transaction_batch
from asyncpipe.demo.v1 import bank_pb2 as pb


def count(db: Path, table: str) -> int:
    found = rows(db, f"SELECT count(*) FROM {table}")
    return found[0][0] if found else 0


async def test_each_unary_rpc_stores_what_it_acknowledges(tmp_path: Path) -> None:
    db = tmp_path / "bank.db"
    rng = random.Random(7)
    cpfs = [make_cpf(rng) for _ in range(3)]
    async with serving(bank_pipeline(db)) as served:
        client = served.client
        clients = [
            {
                "id": i + 1,
                "name": f"Cliente {i}",
                "cpf": cpf,
                "birth_date": "1990-05-17",
                "address": "Rua A, 1",
            }
            for i, cpf in enumerate(cpfs)
        ]
        reply = await client.send_clients(clients, batch_id="c1")
        assert (reply.success, reply.batch_id, reply.items_received) == (True, "c1", 3)
        assert (reply.items_processed, reply.items_rejected) == (3, 0)
        assert count(db, "clients") == 3  # committed before the reply

        reply = await client.send_transactions(transactions(200), batch_id="t1")
        assert (reply.success, reply.items_processed) == (True, 200)
        assert reply.processing_duration_seconds > 0
        assert count(db, "transactions") == 200

        scores = [
            {
                "cpf": cpf,
                "score": 700,
                "monthly_income": 5000.0,
                "credit_limit": 9000.0,
                "updated_at": "2026-11-01",
            }
            for cpf in cpfs
        ]
        reply = await client.send_scores(scores, batch_id="s1")
        assert (reply.success, reply.items_processed) == (True, 3)
        assert count(db, "scores") == 3
    stored = rows(db, "SELECT id, currency, category FROM transactions WHERE id IN (1, 2)")
    assert stored == [(1, "USD", "Compras"), (2, "EUR", None)]


async def test_the_stream_answers_every_batch_by_its_id(tmp_path: Path) -> None:
    db = tmp_path / "bank.db"
    async with serving(bank_pipeline(db)) as served:
        async with served.client.stream() as stream:
            batches = [
                transaction_batch(transactions(100, 1 + 100 * i), f"b{i}") for i in range(20)
            ]
            replies = await asyncio.gather(*(stream.send(b) for b in batches))
    assert [r.batch_id for r in replies] == [f"b{i}" for i in range(20)]
    assert all(r.success and r.items_processed == 100 for r in replies)
    assert count(db, "transactions") == 2000


async def test_many_concurrent_clients_lose_nothing(tmp_path: Path) -> None:
    db = tmp_path / "bank.db"
    async with serving(bank_pipeline(db)) as served:

        async def one_client(c: int) -> int:
            async with BankClient(served.server.address) as client:
                total = 0
                for b in range(5):
                    start = 1 + (c * 5 + b) * 50
                    reply = await client.send_transactions(transactions(50, start))
                    total += reply.items_processed
                return total

        totals = await asyncio.gather(*(one_client(c) for c in range(20)))
    assert sum(totals) == 20 * 5 * 50
    assert rows(db, "SELECT count(*), count(DISTINCT id) FROM transactions") == [(5000, 5000)]


async def test_invalid_items_are_listed_and_the_rest_is_stored(tmp_path: Path) -> None:
    db = tmp_path / "bank.db"
    items = transactions(6)
    items[1]["currency"] = "XYZ"
    items[2]["date"] = "2026-02-30"
    items[3]["amount"] = -5.0
    items[4]["date"] = "05/01/2026"
    async with serving(bank_pipeline(db)) as served:
        reply = await served.client.send_transactions(items, batch_id="dirty")
        scores = [{"cpf": "123.456.789-00", "score": 500, "updated_at": "2026-01-01"}]
        bad_score = await served.client.send_scores(scores, batch_id="s")
    assert (reply.success, reply.items_received) == (True, 6)
    assert (reply.items_processed, reply.items_rejected) == (2, 4)
    assert [(r.index, r.reason) for r in reply.rejections] == [
        (1, "unknown currency 'XYZ': expected one of ['BRL', 'EUR', 'USD']"),
        (2, "malformed date '2026-02-30': not a real day"),
        (3, "invalid amount -5.0: must be a finite number >= 0"),
        (4, "malformed date '05/01/2026': expected YYYY-MM-DD"),
    ]
    assert rows(db, "SELECT id FROM transactions ORDER BY id") == [(1,), (6,)]
    assert [(r.index, r.reason) for r in bad_score.rejections] == [
        (0, "invalid CPF '123.456.789-00'")
    ]
    letters = served.executor.dead_letters
    assert [(d.node, d.index) for d in letters] == [
        ("transactions", 1),
        ("transactions", 2),
        ("transactions", 3),
        ("transactions", 4),
        ("scores", 0),
    ]
    assert letters[0].error_message.startswith("batch 'dirty' item 1: unknown currency")
    assert 'currency: "XYZ"' in letters[0].payload


async def test_a_batch_refused_as_a_whole_is_invalid_argument(tmp_path: Path) -> None:
    db = tmp_path / "bank.db"
    async with serving(bank_pipeline(db), max_batch_items=100) as served:
        client = served.client
        with pytest.raises(grpc.aio.AioRpcError) as no_id:
            await client.send(pb.TransactionBatch(transactions=[pb.Transaction(id=1)]))
        with pytest.raises(grpc.aio.AioRpcError) as too_big:
            await client.send_transactions(transactions(101), batch_id="big")
    assert no_id.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert no_id.value.details() == "batch_id is empty"
    assert too_big.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert too_big.value.details() == "batch 'big' has 101 transactions; the limit is 100"
    assert count(db, "transactions") == 0


class Gate:
    """A pipeline stage that holds every message until ``open`` is set."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.open = asyncio.Event()

    async def __call__(self, message: Any) -> Any:
        self.arrived.set()
        await self.open.wait()
        return message


async def test_saturation_past_the_deadline_is_resource_exhausted_and_writes_nothing(
    tmp_path: Path,
) -> None:
    db = tmp_path / "bank.db"
    gate = Gate()
    executor = bank_pipeline(db, stage=gate)
    async with serving(executor, max_in_flight=1, client_options={"retries": 0}) as served:
        first = asyncio.create_task(served.client.send_transactions(transactions(10), batch_id="1"))
        await gate.arrived.wait()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await served.client.send_transactions(transactions(10, 11), batch_id="2", timeout=0.3)
        gate.open.set()
        reply = await first
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "batch '2' was not taken before the deadline" in (refused.value.details() or "")
    assert reply.success and reply.items_processed == 10
    assert rows(db, "SELECT min(id), max(id) FROM transactions") == [(1, 10)]


async def test_ack_accepted_answers_before_the_commit(tmp_path: Path) -> None:
    db = tmp_path / "bank.db"
    gate = Gate()
    async with serving(bank_pipeline(db, stage=gate), ack="accepted") as served:
        reply = await served.client.send_transactions(transactions(5), batch_id="a")
        assert reply.success and reply.items_processed == 5
        assert reply.message == "accepted into the pipeline (not yet stored)"
        assert count(db, "transactions") == 0
        gate.open.set()
    assert count(db, "transactions") == 5  # the drain stored it


async def test_items_rejected_inside_the_pipeline_are_reported_by_request_index(
    tmp_path: Path,
) -> None:
    def no_big_amounts(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        kept = []
        for i, record in enumerate(batch):
            if record["amount"] > 500:
                reject(record, f"amount {record['amount']} needs review", index=i)
            else:
                kept.append(record)
        return kept

    items = transactions(4)
    items[0]["currency"] = "???"  # refused by the server: shifts the pipeline's indices
    items[2]["amount"] = 900.0
    db = tmp_path / "bank.db"
    # Submitted straight to the rejecting node: its indices map back to the request.
    async with serving(bank_pipeline(db, stage=no_big_amounts), transactions="stage") as served:
        reply = await served.client.send_transactions(items, batch_id="x")
    assert (reply.success, reply.items_processed, reply.items_rejected) == (True, 2, 2)
    assert [(r.index, r.reason) for r in reply.rejections] == [
        (0, "unknown currency '???': expected one of ['BRL', 'EUR', 'USD']"),
        (2, "stage: amount 900.0 needs review"),
    ]
    assert rows(db, "SELECT id FROM transactions ORDER BY id") == [(2,), (4,)]

    # A node further down sees messages of its own making: listed, without a position.
    async with serving(bank_pipeline(tmp_path / "2.db", stage=no_big_amounts)) as served:
        reply = await served.client.send_transactions(items, batch_id="y")
    assert (reply.success, reply.items_processed, reply.items_rejected) == (True, 2, 2)
    assert [r.index for r in reply.rejections] == [-1, 0]


async def test_a_batch_failing_in_the_pipeline_is_not_a_success(tmp_path: Path) -> None:
    def broken(batch: list[dict[str, Any]]) -> None:
        raise RuntimeError("classifier is down")

    db = tmp_path / "bank.db"
    async with serving(bank_pipeline(db, stage=broken)) as served:
        reply = await served.client.send_transactions(transactions(3), batch_id="f")
    assert not reply.success
    assert (reply.items_processed, reply.items_rejected) == (0, 3)
    assert reply.message == (
        "3 item(s) failed in the pipeline: node 'stage': RuntimeError: classifier is down"
    )


async def test_a_batch_dropped_under_the_skip_policy_is_not_a_success(tmp_path: Path) -> None:
    def broken(batch: list[dict[str, Any]]) -> None:
        raise RuntimeError("flaky")

    db = tmp_path / "bank.db"
    executor = bank_pipeline(db, stage=broken, on_error="skip")
    async with serving(executor) as served:
        reply = await served.client.send_transactions(transactions(5), batch_id="s")
    assert not reply.success
    assert (reply.items_processed, reply.items_rejected) == (0, 5)
    assert "skip" in reply.message
    assert count(db, "transactions") == 0


async def test_a_refused_batch_leaves_no_dead_letters(tmp_path: Path) -> None:
    gate = Gate()
    items = transactions(3)
    items[1]["currency"] = "XYZ"
    executor = bank_pipeline(tmp_path / "bank.db", stage=gate)
    async with serving(executor, max_in_flight=1, client_options={"retries": 0}) as served:
        held = asyncio.create_task(served.client.send_transactions(transactions(1, 100)))
        await gate.arrived.wait()
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError):
                await served.client.send_transactions(items, batch_id="r", timeout=0.2)
        assert served.executor.dead_letters == []  # refused: nothing of it was taken
        gate.open.set()
        await held
        reply = await served.client.send_transactions(items, batch_id="r")
    assert reply.items_rejected == 1
    assert [d.index for d in served.executor.dead_letters] == [1]


async def test_graceful_stop_does_not_wait_for_an_open_stream(tmp_path: Path) -> None:
    async with serving(bank_pipeline(tmp_path / "bank.db")) as served:
        async with served.client.stream() as stream:
            reply = await stream.send(transaction_batch(transactions(2), "s1"))
            assert reply.success
            loop = asyncio.get_running_loop()
            started = loop.time()
            await served.server.stop(grace=10)
            assert loop.time() - started < 5  # not the grace period: the stream was ended
            with pytest.raises((ConnectionError, grpc.aio.AioRpcError)):
                await stream.send(transaction_batch(transactions(2, 10), "s2"))


async def test_a_kind_without_a_node_is_unimplemented(tmp_path: Path) -> None:
    db = tmp_path / "bank.db"
    async with serving(bank_pipeline(db), scores=None) as served:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await served.client.send_scores([], batch_id="s")
    assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_unknown_nodes_are_refused_at_construction(tmp_path: Path) -> None:

    with pytest.raises(ValueError, match="scores go to node 'nope'"):
        bank_server(bank_pipeline(tmp_path / "x.db"), scores="nope")


async def test_health_and_reflection_answer(tmp_path: Path) -> None:
    async with serving(bank_pipeline(tmp_path / "bank.db")) as served:
        assert await served.client.health() == "SERVING"
        assert await served.client.health(SERVICE.full_name) == "SERVING"
        channel = grpc.aio.insecure_channel(served.server.address)
        try:
            # The stubs' types expect a sync channel; grpc.aio's works the same way here.
            stub: Any = reflection_pb2_grpc.ServerReflectionStub(channel)  # type: ignore[arg-type]

            async def ask() -> Any:
                yield reflection_pb2.ServerReflectionRequest(list_services="")

            async for reply in stub.ServerReflectionInfo(ask(), timeout=TIMEOUT):
                names = {s.name for s in reply.list_services_response.service}
                break
            health: Any = health_pb2_grpc.HealthStub(channel)
            await served.server.stop(grace=1)
            with pytest.raises(grpc.aio.AioRpcError):  # stopped: refuses calls
                await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
        finally:
            await channel.close()
    assert names >= {SERVICE.full_name, "grpc.health.v1.Health"}
