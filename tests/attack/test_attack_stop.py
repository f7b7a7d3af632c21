"""Stopping under attack: a silent client cannot hold a SIGTERM stop, and a stream open
at SIGTERM ends UNAVAILABLE with every batch it acknowledged stored."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections import Counter
from pathlib import Path

import grpc
import pytest
from demoprocess import DemoProcess, query
from rawclient import RawClient, id_block, valid_batch

from asyncpipe.demo.v1 import bank_pb2 as pb

pytestmark = pytest.mark.attack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
STOP_BOUND = 5.0  # seconds: it took the whole 20 s of a graceful stop's grace before


@pytest.mark.timeout(90)
async def test_silent_clients_do_not_delay_a_sigterm_stop(tmp_path: Path) -> None:
    server = DemoProcess(tmp_path / "demo")
    writers: list[asyncio.StreamWriter] = []
    try:
        await server.ready()
        # One connects and says nothing; one sends the HTTP/2 preface and nothing more.
        _, silent = await asyncio.open_connection("127.0.0.1", server.port)
        reader, preface = await asyncio.open_connection("127.0.0.1", server.port)
        writers += [silent, preface]
        preface.write(PREFACE)
        await preface.drain()
        # The server's SETTINGS frame: it has taken the connection.
        async with asyncio.timeout(10):
            assert await reader.read(9)
        code, seconds = await server.terminate(timeout=60)
        assert code == 0, f"exit {code} after {seconds:.1f}s:\n{server.log()[-2000:]}"
        assert seconds < STOP_BOUND, f"SIGTERM stop took {seconds:.1f}s with silent clients open"
    finally:
        for writer in writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        server.cleanup()


@pytest.mark.timeout(90)
async def test_a_stream_open_at_sigterm_ends_unavailable_with_its_acks_stored(
    tmp_path: Path,
) -> None:
    server = DemoProcess(tmp_path / "demo")
    first = id_block()
    sent: dict[str, pb.TransactionBatch] = {}
    acked: list[str] = []
    answers: Counter[str] = Counter()
    try:
        async with RawClient(await server.ready()) as raw, asyncio.timeout(60):
            call = raw.stream(timeout=50)
            window = asyncio.Semaphore(8)  # batches in flight on the stream

            async def write() -> None:
                for n in range(500):  # bounded: the server stops long before
                    await window.acquire()
                    batch = valid_batch(f"stream-{n}", first + n * 200, 200)
                    sent[batch.batch_id] = batch
                    await call.write(pb.IngestRequest(transactions=batch))
                await call.done_writing()

            writer = asyncio.create_task(write())
            end: grpc.StatusCode | None = None
            try:
                async for reply in call:
                    window.release()
                    answers["OK" if reply.success else reply.message.split(":")[0]] += 1
                    if reply.success:
                        assert reply.items_processed == 200, reply
                        acked.append(reply.batch_id)
                        if len(acked) == 5:
                            server.proc.send_signal(signal.SIGTERM)  # with batches in flight
            except grpc.aio.AioRpcError as error:
                end = error.code()
            else:
                end = await call.code()
            finally:
                writer.cancel()
                with contextlib.suppress(
                    asyncio.CancelledError, asyncio.InvalidStateError, grpc.aio.AioRpcError
                ):
                    await writer
            code, _ = await server.wait(timeout=30)  # it is stopping already
        assert len(acked) >= 5, f"the stream ended before the signal: {end} {answers}"
        ids = {tx.id for batch_id in acked for tx in sent[batch_id].transactions}
        rows = query(
            server.results,
            "SELECT id FROM transactions WHERE id BETWEEN ? AND ?",
            first,
            first + 500 * 200,
        )
        problems = []
        if end != grpc.StatusCode.UNAVAILABLE:
            problems.append(f"the stream ended {end}, not UNAVAILABLE; answers {dict(answers)}")
        if code != 0:
            problems.append(f"exit {code}: {server.log()[-1500:]}")
        lost = ids - {row[0] for row in rows}
        if lost:
            problems.append(f"{len(lost)} of {len(ids)} acknowledged items not stored")
        assert not problems, "\n".join(problems)
    finally:
        server.cleanup()
