"""Malformed protobuf is the client's fault: INVALID_ARGUMENT, logged once per client."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest
from ingest_helpers import TIMEOUT, serving, transactions
from ingest_pipeline import bank_pipeline

from asyncpipe.demo.service import transaction_batch
from asyncpipe.demo.v1 import bank_pb2 as pb

METHOD = "/asyncpipe.demo.v1.IngestionService/IngestTransactions"


def invalid_utf8() -> bytes:
    """A TransactionBatch whose batch_id (field 1, a string) is not UTF-8."""
    return b"\x0a\x02\xff\xfe"


def truncated() -> bytes:
    return transaction_batch(transactions(3), "t").SerializeToString()[:-7]


@pytest.mark.parametrize("payload", [invalid_utf8(), truncated()], ids=["utf8", "truncated"])
async def test_a_malformed_request_is_invalid_argument_without_a_traceback(
    tmp_path: Path, payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(Exception):  # noqa: B017 - the payload really is malformed
        pb.TransactionBatch.FromString(payload)
    caplog.set_level(logging.INFO)
    async with serving(bank_pipeline(tmp_path / "bank.db")) as served:
        channel = grpc.aio.insecure_channel(served.server.address)
        # No serializers: raw bytes both ways.
        send: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(METHOD)
        codes = []
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await send(payload, timeout=TIMEOUT)
            codes.append((refused.value.code(), refused.value.details()))
        good = await send(
            transaction_batch(transactions(2), "g").SerializeToString(), timeout=TIMEOUT
        )
        await channel.close()
    assert pb.IngestResponse.FromString(good).success  # the connection still serves
    code, details = codes[0]
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details is not None and details.startswith("malformed TransactionBatch")
    assert codes == [codes[0]] * 3
    malformed = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(malformed) == 1, [r.getMessage() for r in caplog.records]
    assert all(r.exc_info is None for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_malformed_request_on_a_stream_is_answered_and_the_stream_goes_on(
    tmp_path: Path,
) -> None:
    async with serving(bank_pipeline(tmp_path / "bank.db")) as served:
        channel = grpc.aio.insecure_channel(served.server.address)
        call: grpc.aio.StreamStreamCall[bytes, bytes] = channel.stream_stream(
            "/asyncpipe.demo.v1.IngestionService/IngestStream"
        )(timeout=TIMEOUT)
        good = pb.IngestRequest(transactions=transaction_batch(transactions(2), "g"))
        await call.write(b"\x12\x04\x0a\x02\xff\xfe")  # transactions.batch_id not UTF-8
        await call.write(good.SerializeToString())
        await call.done_writing()
        replies = [pb.IngestResponse.FromString(raw) async for raw in call]
        await channel.close()
    assert len(replies) == 2
    bad, ok = sorted(replies, key=lambda r: r.batch_id)
    assert not bad.success and bad.message.startswith("INVALID_ARGUMENT: malformed IngestRequest")
    assert ok.success and ok.batch_id == "g"
