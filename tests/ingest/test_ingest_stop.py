"""Stopping: idle connections do not hold a graceful stop; an open stream ends UNAVAILABLE."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path

import grpc
from ingest_helpers import TIMEOUT, ServerProcess, serving, transactions
from ingest_pipeline import bank_pipeline

from asyncpipe.demo.service import transaction_batch
from asyncpipe.demo.v1 import bank_pb2 as pb
from asyncpipe.demo.v1 import bank_pb2_grpc as pb_grpc

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


async def test_silent_connections_do_not_hold_a_graceful_stop(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "bank.db")  # its grace is 20 s
    silent = socket.socket()
    preface_only = socket.socket()
    try:
        port = await server.ready()
        silent.connect(("127.0.0.1", port))  # says nothing at all
        preface_only.connect(("127.0.0.1", port))
        preface_only.sendall(PREFACE)  # says only the HTTP/2 preface
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(TIMEOUT * 2):
            code, err = await server.wait()
        took = time.monotonic() - signalled
        assert code == 0, err
        assert took < 5, f"SIGTERM to exit took {took:.1f}s"
    finally:
        silent.close()
        preface_only.close()
        server.kill()


async def stream_until_stopped(db: Path) -> tuple[grpc.StatusCode, str, list[pb.IngestResponse]]:
    """A client writing batches as fast as it can while the server stops (once it has
    answered the stream's first batch: the stream is open on both sides), and at its first
    refusal doing what a client should -- stop writing, half-close --: the stream's final
    status and details, and its replies."""
    async with serving(bank_pipeline(db)) as served:
        channel = grpc.aio.insecure_channel(served.server.address)
        call = pb_grpc.IngestionServiceStub(channel).IngestStream(timeout=TIMEOUT)
        refused = asyncio.Event()

        async def write() -> None:
            for i in range(10_000):
                if refused.is_set():
                    await call.done_writing()
                    return
                batch = transaction_batch(transactions(20, 1 + 20 * i), f"b{i}")
                await call.write(pb.IngestRequest(transactions=batch))

        writer = asyncio.create_task(write())
        stopping: asyncio.Task[None] | None = None
        answers = []
        final, details = grpc.StatusCode.OK, ""
        try:
            async for reply in call:
                answers.append(reply)
                if stopping is None:
                    stopping = asyncio.create_task(served.server.stop(grace=10))
                if reply.message.startswith("UNAVAILABLE"):
                    refused.set()
        except grpc.aio.AioRpcError as error:
            final, details = error.code(), error.details() or ""
        assert stopping is not None
        await stopping
        await writer  # its writes all went through: none failed
        await channel.close()
    return final, details, answers


async def test_a_stream_open_at_the_stop_is_refused_unavailable_never_internal(
    tmp_path: Path,
) -> None:
    for run in range(4):
        final, details, answers = await stream_until_stopped(tmp_path / f"{run}.db")
        assert final == grpc.StatusCode.UNAVAILABLE, (run, final, details)
        assert "shutting down" in details
        assert all(a.success or a.message.startswith("UNAVAILABLE") for a in answers)
