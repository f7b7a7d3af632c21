"""The bank's gRPC ingestion service: its protocol, its routes, and client helpers.

The protocol is ``proto/asyncpipe/demo/v1/bank.proto`` (package ``asyncpipe.demo.v1``,
code generated into :mod:`asyncpipe.demo.v1`): ``IngestClients``, ``IngestTransactions``,
``IngestScores`` (one batch, one reply) and ``IngestStream`` (batches in, one reply per
batch out). It is served by the framework's generic :class:`asyncpipe.ingest.IngestServer`
with the bank's converters (:mod:`._converters`) wired in here::

    server = bank_server(executor, transactions="classify", port=50051)
    async with BankClient("127.0.0.1:50051") as client:
        reply = await client.send_transactions(rows)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from google.protobuf.message import Message

from .._executor import PipelineExecutor
from ..ingest import IngestClient, IngestServer, Route, new_batch_id
from ._converters import DEFAULT_CURRENCIES, client_record, score_record, transaction_converter
from .v1 import bank_pb2 as pb

__all__ = [
    "DEFAULT_CURRENCIES",
    "SERVICE",
    "BankClient",
    "bank_routes",
    "bank_server",
    "client_batch",
    "score_batch",
    "transaction_batch",
]

#: The bank's service, as :class:`IngestServer` and :class:`IngestClient` take it.
SERVICE = pb.DESCRIPTOR.services_by_name["IngestionService"]

M = TypeVar("M", bound=Message)


def bank_routes(
    *,
    clients: str | None = None,
    transactions: str | None = None,
    scores: str | None = None,
    currencies: Iterable[str] = DEFAULT_CURRENCIES,
) -> dict[str, Route]:
    """The routes of the bank's service: each kind of batch to the node named (None: that
    RPC answers ``UNIMPLEMENTED``); transactions in ``currencies`` only."""
    routes = {
        "IngestClients": (clients, "clients", client_record),
        "IngestTransactions": (transactions, "transactions", transaction_converter(currencies)),
        "IngestScores": (scores, "scores", score_record),
    }
    return {
        method: Route(node, items=items, convert=convert)
        for method, (node, items, convert) in routes.items()
        if node is not None
    }


def bank_server(
    executor: PipelineExecutor,
    *,
    clients: str | None = None,
    transactions: str | None = None,
    scores: str | None = None,
    currencies: Iterable[str] = DEFAULT_CURRENCIES,
    **options: Any,
) -> IngestServer:
    """An :class:`IngestServer` of the bank's service into ``executor`` (see
    :func:`bank_routes`); ``options`` are the server's (``host``, ``port``, ``ack``...)."""
    routes = bank_routes(
        clients=clients, transactions=transactions, scores=scores, currencies=currencies
    )
    return IngestServer(executor, SERVICE, routes, **options)


def _message(cls: type[M], item: M | Mapping[str, Any]) -> M:
    if isinstance(item, cls):
        return item
    if isinstance(item, Mapping):
        return cls(**{k: v for k, v in item.items() if v is not None})
    raise TypeError(f"expected a {cls.__name__} or a mapping, got {type(item).__name__}")


def _fill(batch: M, field: str, item_type: type[Message], items: Iterable[Any]) -> M:
    getattr(batch, field).extend(_message(item_type, item) for item in items)
    batch.emitted_at.GetCurrentTime()  # type: ignore[attr-defined]
    return batch


def transaction_batch(
    items: Iterable[pb.Transaction | Mapping[str, Any]], batch_id: str | None = None
) -> pb.TransactionBatch:
    """A ``TransactionBatch`` of messages or mappings (a None value means "not set"), with
    a fresh id (unless given) and the emission time."""
    batch = pb.TransactionBatch(batch_id=batch_id or new_batch_id())
    return _fill(batch, "transactions", pb.Transaction, items)


def client_batch(
    items: Iterable[pb.Client | Mapping[str, Any]], batch_id: str | None = None
) -> pb.ClientBatch:
    """A ``ClientBatch`` of messages or mappings (see :func:`transaction_batch`)."""
    return _fill(pb.ClientBatch(batch_id=batch_id or new_batch_id()), "clients", pb.Client, items)


def score_batch(
    items: Iterable[pb.Score | Mapping[str, Any]], batch_id: str | None = None
) -> pb.ScoreBatch:
    """A ``ScoreBatch`` of messages or mappings (see :func:`transaction_batch`)."""
    return _fill(pb.ScoreBatch(batch_id=batch_id or new_batch_id()), "scores", pb.Score, items)


class BankClient(IngestClient):
    """An :class:`IngestClient` of the bank's service, with one ``send_*`` per kind of
    batch (items as messages or mappings); options as :class:`IngestClient`'s."""

    def __init__(self, target: str, **options: Any) -> None:
        super().__init__(target, SERVICE, **options)

    async def send_transactions(
        self,
        items: Iterable[pb.Transaction | Mapping[str, Any]],
        *,
        batch_id: str | None = None,
        timeout: float | None = None,
    ) -> pb.IngestResponse:
        """Send one batch of transactions (see :meth:`IngestClient.send`)."""
        reply: pb.IngestResponse = await self.send(
            transaction_batch(items, batch_id), timeout=timeout
        )
        return reply

    async def send_clients(
        self,
        items: Iterable[pb.Client | Mapping[str, Any]],
        *,
        batch_id: str | None = None,
        timeout: float | None = None,
    ) -> pb.IngestResponse:
        """Send one batch of clients (see :meth:`IngestClient.send`)."""
        reply: pb.IngestResponse = await self.send(client_batch(items, batch_id), timeout=timeout)
        return reply

    async def send_scores(
        self,
        items: Iterable[pb.Score | Mapping[str, Any]],
        *,
        batch_id: str | None = None,
        timeout: float | None = None,
    ) -> pb.IngestResponse:
        """Send one batch of scores (see :meth:`IngestClient.send`)."""
        reply: pb.IngestResponse = await self.send(score_batch(items, batch_id), timeout=timeout)
        return reply
