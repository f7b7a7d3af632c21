"""The two servers of ``python -m bench.ingest``, each in a process of its own."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

import asyncpipe
from asyncpipe import HandlerNode, PipelineExecutor
from asyncpipe.demo.service import bank_server
from asyncpipe.demo.v1 import bank_pb2 as pb
from asyncpipe.demo.v1 import bank_pb2_grpc as pb_grpc
from asyncpipe.ingest import serve

__all__ = ["SERVER_OPTIONS", "SIDES", "START_TIMEOUT", "ServerProcess"]

SIDES = ("raw", "asyncpipe")
START_TIMEOUT = 60.0  # seconds a server process may take to report its port
SERVER_OPTIONS = [  # what IngestServer sets; the raw server gets the same
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.so_reuseport", 0),
]


class RawServicer(pb_grpc.IngestionServiceServicer):
    """Answers every batch at once, items untouched: the cost of gRPC alone."""

    async def IngestTransactions(
        self, request: pb.TransactionBatch, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.IngestResponse:
        return pb.IngestResponse(
            batch_id=request.batch_id, success=True, items_received=len(request.transactions)
        )

    async def IngestStream(
        self,
        request_iterator: AsyncIterator[pb.IngestRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[pb.IngestResponse]:
        async for request in request_iterator:
            batch = request.transactions
            yield pb.IngestResponse(
                batch_id=batch.batch_id, success=True, items_received=len(batch.transactions)
            )


async def _serve_raw(report: Any) -> None:
    stop = asyncio.Event()
    remove = asyncpipe.install_signal_handlers(stop.set, stop.set)
    server = grpc.aio.server(options=SERVER_OPTIONS)
    pb_grpc.add_IngestionServiceServicer_to_server(RawServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    report.send(port)
    try:
        await stop.wait()
    finally:
        remove()
        await server.stop(1.0)


def discard(batch: list[dict[str, Any]]) -> None:
    """The no-op sink: the batch counts as committed once this returns."""


def noop_pipeline() -> PipelineExecutor:
    ingress = HandlerNode("transactions")
    return PipelineExecutor([ingress], [HandlerNode("discard", discard, [ingress])])


async def _serve_asyncpipe(report: Any) -> None:
    server = bank_server(noop_pipeline(), transactions="transactions", ack="committed")
    await serve(server, grace=1.0, on_ready=lambda server: report.send(server.port))


def server_main(side: str, report: Any, use_uvloop: bool) -> None:
    """Entry point of a server process: serve until SIGTERM, reporting the port first."""
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)  # no "SIGTERM received"
    coro = _serve_raw(report) if side == "raw" else _serve_asyncpipe(report)
    asyncpipe.run(coro, use_uvloop=use_uvloop)


@dataclass
class ServerProcess:
    side: str
    process: Any
    port: int

    @classmethod
    def start(cls, side: str, use_uvloop: bool) -> ServerProcess:
        context = multiprocessing.get_context("spawn")  # no gRPC state inherited by fork
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=server_main, args=(side, sender, use_uvloop), name=f"bench-{side}"
        )
        process.start()
        sender.close()
        if not receiver.poll(START_TIMEOUT):
            process.kill()
            raise RuntimeError(f"the {side} server did not start")
        return cls(side, process, receiver.recv())

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the server process so far (Linux), else None."""
        try:
            with open(f"/proc/{self.process.pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
