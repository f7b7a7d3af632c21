"""The demo pipeline's stateless handlers (the rules themselves are in ``_domain``; the
aggregator's stateful stages are in ``_aggregate``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._handler import BaseHandler, reject
from ._data import Scale, timer_batch
from ._domain import classify, convert, cpf_digits, normalize_client, score_problem

__all__ = ["Classifier", "CurrencyConverter", "Normalizer", "ScoreCheck", "TimerBatches"]

_KNOWN_DESCRIPTIONS = 4096


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

    def __init__(self) -> None:
        #: The categories of descriptions seen (they repeat across transactions): each
        #: description is classified once. Bounded, whatever the data.
        self.known: dict[str, str] = {}

    def handle(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        known = self.known
        for record in batch:
            if not record.get("category"):
                description = record["description"]
                category = known.get(description)
                if category is None:
                    if len(known) >= _KNOWN_DESCRIPTIONS:
                        known.clear()
                    category = known[description] = classify(description)
                record["category"] = category
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
