"""A proto of one's own, served by the same machinery: demo/own_proto/serve_sensors.py."""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from ingest_helpers import TIMEOUT, rows

from asyncpipe.ingest import IngestClient, Route

EXAMPLE = Path(__file__).resolve().parents[2] / "demo" / "own_proto"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    sys.path.insert(0, str(EXAMPLE))  # as when the script runs: sensors_pb2 beside it
    try:
        return importlib.import_module("serve_sensors")
    finally:
        sys.path.remove(str(EXAMPLE))


async def test_valid_readings_are_stored_and_the_invalid_one_is_listed(
    example: ModuleType, tmp_path: Path
) -> None:
    db = tmp_path / "readings.db"
    executor = example.pipeline(db)
    async with asyncio.timeout(TIMEOUT):
        async with executor:
            server = example.server(executor)  # port 0 on 127.0.0.1
            async with server:
                await server.ready.wait()
                reply = await example.send_one_batch(server.address)
            executor.stop()
    assert reply.success, reply.message
    assert (reply.items_received, reply.items_processed, reply.items_rejected) == (3, 2, 1)
    assert [(r.index, r.reason) for r in reply.rejections] == [
        (1, "malformed time 'yesterday': expected ISO 8601")
    ]
    assert rows(db, "SELECT sensor, celsius FROM readings ORDER BY sensor") == [
        ("cellar", 12.25),
        ("roof", 21.5),
    ]


async def test_the_stream_rpc_routes_its_batches_like_the_unary_one(
    example: ModuleType, tmp_path: Path
) -> None:
    pb: Any = example.pb
    db = tmp_path / "readings.db"
    executor = example.pipeline(db)
    batches = [
        pb.ReadingBatch(
            batch_id=f"b{i}",
            readings=[pb.Reading(sensor=f"s{i}", at="2026-05-01T12:00:00", celsius=99.0 - i * 40)],
        )
        for i in range(2)
    ]
    async with asyncio.timeout(TIMEOUT):
        async with executor:
            server = example.server(executor)
            async with server:
                await server.ready.wait()
                async with IngestClient(server.address, example.SERVICE) as client:
                    async with client.stream() as stream:
                        replies = await asyncio.gather(*(stream.send(b) for b in batches))
            executor.stop()
    assert [(r.batch_id, r.items_processed, r.items_rejected) for r in replies] == [
        ("b0", 0, 1),
        ("b1", 1, 0),
    ]
    assert replies[0].rejections[0].reason == "implausible temperature 99.0 °C"
    assert rows(db, "SELECT sensor FROM readings") == [("s1",)]


def test_a_route_to_a_field_the_request_lacks_is_refused_at_construction(
    example: ModuleType, tmp_path: Path
) -> None:
    executor = example.pipeline(tmp_path / "x.db")
    route = Route("readings", items="values", convert=example.reading_record)
    with pytest.raises(ValueError, match="ReadingBatch has no repeated field 'values'"):
        example.IngestServer(executor, example.SERVICE, {"Record": route})
    with pytest.raises(ValueError, match="has no unary method Nope"):
        example.IngestServer(executor, example.SERVICE, {"Nope": route})
