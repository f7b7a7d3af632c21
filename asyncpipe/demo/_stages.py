"""The demo pipeline's handlers (the rules themselves are in ``_domain``)."""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from .._handler import BaseHandler, reject
from ._data import Scale, timer_batch
from ._dedupe import DEDUPE_IDS, RecentIds
from ._domain import (
    ClientState,
    Totals,
    classify,
    convert,
    cpf_digits,
    global_metrics,
    normalize_client,
    profile,
    recent_window,
    score_problem,
)

__all__ = [
    "Aggregator",
    "Classifier",
    "CurrencyConverter",
    "Normalizer",
    "ScoreCheck",
    "Select",
    "TimerBatches",
]


class Normalizer(BaseHandler):
    """Clients: names and addresses normalised, CPF validated (invalid: dead letter)."""

    def handle(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        out: list[dict[str, Any]] = []
        for index, record in enumerate(batch):
            result = normalize_client(record)
            if isinstance(result, str):
                reject(record, result, index=index)
            else:
                out.append(result)
        return out or None


class Classifier(BaseHandler):
    """New transactions: the category from the description, where there is none."""

    def handle(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for record in batch:
            if not record.get("category"):
                record["category"] = classify(record["description"])
        return batch


class CurrencyConverter(BaseHandler):
    """``amount_brl`` from the rate table. Dead letters: an unknown currency, an amount
    that is not a finite number within ``0..MAX_AMOUNT`` (a huge one would fail the risk
    model for its whole batch), a converted amount past ``MAX_AMOUNT_BRL``. Every
    transaction passes here, whether from the database, the inbox, the timer or gRPC."""

    def __init__(self, rates: Mapping[str, float]) -> None:
        self.rates = dict(rates)

    def handle(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        out = []
        rates = self.rates
        for index, record in enumerate(batch):
            brl = convert(record, rates)
            if isinstance(brl, str):
                reject(record, brl, index=index)
                continue
            # A new dict: the message may be shared with other dependents (fan-out).
            out.append({**record, "amount_brl": brl})
        return out or None


class ScoreCheck(BaseHandler):
    """Scores: the CPF validated and kept as its 11 digits; income and credit limit, when
    given, finite numbers within ``0..MAX_AMOUNT`` (else: dead letter with the reason)."""

    def handle(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        out = []
        for index, record in enumerate(batch):
            cpf = cpf_digits(str(record["cpf"] or ""))
            problem = "invalid CPF" if cpf is None else score_problem(record)
            if problem is not None:
                reject(record, problem, index=index)
                continue
            record["cpf"] = cpf
            out.append(record)
        return out or None


class TimerBatches:
    """What the demo's timer fires: the next generated batch of new transactions."""

    def __init__(self, scale: Scale) -> None:
        self.scale = scale
        self.runs = 0

    def __call__(self) -> list[dict[str, Any]]:
        batch = timer_batch(self.scale, self.runs)
        self.runs += 1
        return batch


class Aggregator(BaseHandler):
    """Keyed per-client state joining clients, scores and transactions, in any order.

    After each message it emits ``("profiles", rows)`` for the clients it changed (so a
    transaction ingested over gRPC updates its client's profile before the reply), every
    ``metrics_every`` seconds ``("metrics", rows)``, and both once more when the input
    ends.

    A transaction id seen before is not counted again (a retried batch), within a bounded
    window: the last ``dedupe_ids`` distinct ids (:class:`RecentIds`), so memory stays
    bounded; a resend arriving after its id was forgotten counts twice. The *first*
    version of a resent transaction is the one counted, while the ``transactions`` sink
    upserts and keeps the *last*: a resend with a changed amount leaves the profile and
    the stored row disagreeing (as does the reference, which keeps the last). Left as is:
    a later issue replaces this in-memory state with durable keyed state.
    """

    def __init__(
        self, as_of: str, metrics_every: float = 1.0, dedupe_ids: int = DEDUPE_IDS
    ) -> None:
        self.as_of = as_of
        self.recent_from, _ = recent_window(datetime.date.fromisoformat(as_of))
        self.metrics_every = metrics_every
        self.clients: dict[int, ClientState] = {}
        self.scores: dict[str, dict[str, Any]] = {}  # by CPF
        self.clients_of_cpf: dict[str, set[int]] = {}  # a CPF may be on several clients
        self.seen = RecentIds(dedupe_ids)
        self.totals = Totals()
        self._metrics_at = time.monotonic()

    def _state(self, client_id: int) -> ClientState:
        state = self.clients.get(client_id)
        if state is None:
            state = self.clients[client_id] = ClientState()
        return state

    async def handle(self, batch: list[dict[str, Any]]) -> AsyncIterator[Any]:
        changed: set[int] = set()
        if batch and "amount_brl" in batch[0]:
            recent_from, as_of, seen = self.recent_from, self.as_of, self.seen
            for tx in batch:
                if not seen.add(tx["id"]):
                    continue
                self._state(tx["client_id"]).add(tx, recent_from, as_of)
                self.totals.add(tx)
                changed.add(tx["client_id"])
        elif batch and "score" in batch[0]:
            for score in batch:
                self.scores[score["cpf"]] = score
                changed.update(self.clients_of_cpf.get(score["cpf"], ()))
        else:
            for client in batch:
                state = self._state(client["id"])
                if state.client is not None:  # a client sent again: its CPF may change
                    self.clients_of_cpf[state.client["cpf"]].discard(client["id"])
                state.client = client
                self.clients_of_cpf.setdefault(client["cpf"], set()).add(client["id"])
                changed.add(client["id"])
        rows = self._profiles(changed)
        if rows:
            yield ("profiles", rows)
        if time.monotonic() - self._metrics_at >= self.metrics_every:
            yield ("metrics", self._metrics())

    async def finish(self) -> AsyncIterator[Any]:
        yield ("metrics", self._metrics())

    def _profiles(self, client_ids: set[int]) -> list[dict[str, Any]]:
        rows = []
        for client_id in sorted(client_ids):
            state = self.clients[client_id]
            if state.client is not None:
                score = self.scores.get(state.client["cpf"])
                rows.append(profile(client_id, state, score))
        return rows

    def _metrics(self) -> list[dict[str, Any]]:
        self._metrics_at = time.monotonic()
        return [
            {"name": m["name"], "value": json.dumps(m["value"], ensure_ascii=False)}
            for m in global_metrics(self.totals, self.clients.items())
        ]


class Select:
    """Passes the rows of the aggregator's messages of one kind (``"profiles"``...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def __call__(self, message: tuple[str, list[dict[str, Any]]]) -> Any:
        kind, rows = message
        return rows if kind == self.kind else None
