"""A raw client of the ingestion service, built from ``proto/`` and nothing else of ours.

The attack suite does not use :class:`asyncpipe.ingest.IngestClient`: a client with
retries, backoff and a friendly builder would hide what the server really answers. This
is the generated stub over a plain ``grpc.aio`` channel, a raw-bytes method for malformed
requests, the standard health service, and builders for the batches the attacks send.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from asyncpipe.demo.v1 import bank_pb2 as pb
from asyncpipe.demo.v1 import bank_pb2_grpc as pb_grpc

SERVICE = "asyncpipe.demo.v1.IngestionService"
TRANSACTIONS_METHOD = f"/{SERVICE}/IngestTransactions"
#: The server's documented largest request or reply (IngestServer.max_message_bytes).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: Ids far above any the demo generates; one random block of BLOCK ids per test run, so
#: rows left by an earlier run can never stand in for this run's.
BASE_ID = 3_000_000_000_000
BLOCK = 10**8

#: Descriptions with accents and characters outside the BMP: stored byte for byte.
DESCRIPTIONS = ("SUPERMERCADO CENTRO", "UBER SUL", "PIX RIO ção", "SALARIO ACME ☕🚀")
CURRENCIES = ("BRL", "USD", "EUR")


def id_block() -> int:
    """The first id of a fresh random block of :data:`BLOCK` ids."""
    return BASE_ID + random.randrange(10**6) * BLOCK


def transaction(tx_id: int, k: int = 0) -> pb.Transaction:
    """A valid transaction; ``k`` varies the other fields (every second one categorised)."""
    tx = pb.Transaction(
        id=tx_id,
        client_id=1 + k % 200,
        date=f"2026-{1 + k % 12:02d}-{1 + k % 28:02d}",
        amount=round(10 + (k * 37.31) % 900, 2),
        currency=CURRENCIES[k % 3],
        description=DESCRIPTIONS[k % 4],
    )
    if k % 2:
        tx.category = "Compras"
    return tx


def transaction_batch(batch_id: str, items: Iterable[pb.Transaction]) -> pb.TransactionBatch:
    batch = pb.TransactionBatch(batch_id=batch_id)
    batch.transactions.extend(items)
    batch.emitted_at.GetCurrentTime()
    return batch


def valid_batch(batch_id: str, first_id: int, size: int = 200) -> pb.TransactionBatch:
    """``size`` valid transactions with ids ``first_id .. first_id + size - 1``."""
    return transaction_batch(batch_id, (transaction(first_id + k, k) for k in range(size)))


def expected_row(tx: pb.Transaction) -> tuple[Any, ...]:
    """The fields of ``tx`` as the transactions table must hold them (category: sent or
    None, for the caller to compare only when sent)."""
    category = tx.category if tx.HasField("category") else None
    return (tx.id, tx.client_id, tx.date, tx.amount, tx.currency, tx.description, category)


def valid_cpf(rng: random.Random) -> str:
    """11 digits with correct check digits (not all equal)."""
    while True:
        base = [rng.randrange(10) for _ in range(9)]
        if len(set(base)) > 1:
            break
    for weight in (10, 11):
        total = sum(d * w for d, w in zip(base, range(weight, 1, -1), strict=False))
        base.append(total * 10 % 11 % 10)
    return "".join(map(str, base))


@dataclass
class Tally:
    """Answers by status: ``OK`` (success), ``FAILED`` (success false) or a status name."""

    statuses: Counter[str] = field(default_factory=Counter)

    def note(self, status: str) -> None:
        self.statuses[status] += 1


class RawClient:
    """The generated stub over one ``grpc.aio`` insecure channel to ``target``.

    The reconnect backoff is short, so a channel rides out a server restart on the same
    port within a fraction of a second instead of the default one to two minutes.
    """

    def __init__(self, target: str, *, max_receive: int = MAX_MESSAGE_BYTES) -> None:
        self.target = target
        self.channel = grpc.aio.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", max_receive),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 300),
                ("grpc.enable_retries", 0),
            ],
        )
        self.stub = pb_grpc.IngestionServiceStub(self.channel)
        # Bytes in, bytes out: no serializer, so malformed requests reach the server.
        self._raw: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = self.channel.unary_unary(
            TRANSACTIONS_METHOD
        )

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def send(
        self, batch: pb.TransactionBatch, timeout: float, *, wait_for_ready: bool = False
    ) -> pb.IngestResponse:
        reply: pb.IngestResponse = await self.stub.IngestTransactions(
            batch, timeout=timeout, wait_for_ready=wait_for_ready
        )
        return reply

    async def send_clients(self, batch: pb.ClientBatch, timeout: float) -> pb.IngestResponse:
        reply: pb.IngestResponse = await self.stub.IngestClients(batch, timeout=timeout)
        return reply

    async def send_raw(self, payload: bytes, timeout: float) -> bytes:
        """``payload`` as the request body of IngestTransactions, no serializer."""
        reply: bytes = await self._raw(payload, timeout=timeout)
        return reply

    def stream(self, timeout: float) -> Any:
        """An ``IngestStream`` call (write requests, read responses)."""
        return self.stub.IngestStream(timeout=timeout)

    async def health_watch(self, timeout: float) -> AsyncIterator[str]:
        """The overall health status names as the server pushes them (waits for the
        server to be reachable)."""
        stub: Any = health_pb2_grpc.HealthStub(self.channel)
        call = stub.Watch(
            health_pb2.HealthCheckRequest(service=SERVICE), timeout=timeout, wait_for_ready=True
        )
        async for reply in call:
            yield health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


async def send_timed(
    client: RawClient, batch: pb.TransactionBatch, timeout: float, **options: Any
) -> tuple[str, pb.IngestResponse | None, float]:
    """Send ``batch``; (status, reply or None, seconds taken). Never raises an RPC error."""
    started = time.monotonic()
    try:
        reply = await client.send(batch, timeout, **options)
    except grpc.aio.AioRpcError as error:
        return error.code().name, None, time.monotonic() - started
    except TimeoutError:  # pragma: no cover - grpc reports its own deadline
        return "DEADLINE_EXCEEDED", None, time.monotonic() - started
    return ("OK" if reply.success else "FAILED"), reply, time.monotonic() - started


async def send_raw_timed(
    client: RawClient, payload: bytes, timeout: float
) -> tuple[str, pb.IngestResponse | None, float]:
    """:func:`send_timed` for a batch serialized beforehand (the client's own CPU then
    stays out of the time measured, which matters with hundreds of callers)."""
    started = time.monotonic()
    try:
        body = await client.send_raw(payload, timeout)
    except grpc.aio.AioRpcError as error:
        return error.code().name, None, time.monotonic() - started
    took = time.monotonic() - started
    reply = pb.IngestResponse.FromString(body)
    return ("OK" if reply.success else "FAILED"), reply, took


def summary(figures: Mapping[str, Any]) -> str:
    """One line per figure, for the test output (``-s``)."""
    return "\n".join(f"  {name}: {value}" for name, value in figures.items())
