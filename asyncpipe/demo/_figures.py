"""The figures behind ``client_profiles`` and ``metrics``, folded one record at a time.

A client's figures are kept incrementally (O(1) per transaction) by the streaming stages
(``_aggregate``) and by the reference program (``_reference``) with these same functions,
so the two cannot drift apart. They are plain lists of numbers: a stage stores a client's
state at every change (pickled), and a short list is the cheapest thing to store.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._domain import INCOME_CATEGORY, cents, round2

__all__ = [
    "CPF",
    "RECENT",
    "SCORE",
    "TX",
    "Part",
    "RecentWindow",
    "Score",
    "Totals",
    "add_transaction",
    "global_metrics",
    "metric_rows",
    "new_client",
    "profile",
    "score_of",
]

# A client's state: its figures (money in integer cents) then what the join gave it.
INCOME, INCOME_N, EXPENSE, TX, RECENT, SUSPICIOUS, CPF, SCORE = range(8)

#: What a profile needs of a CPF's score record: (score, monthly_income).
Score = tuple[int | None, float | None]
#: What the pipeline-wide totals need of a transaction:
#: (category, currency, amount in cents, amount_brl in cents, suspicious).
Part = tuple[str, str, int, int, int]


def new_client() -> list[Any]:
    """The state of a client nothing is known of: no transactions, no client record (its
    CPF: None), no score."""
    return [0, 0, 0, 0, 0, 0, None, None]


@dataclass(frozen=True, slots=True)
class RecentWindow:
    """The sliding window "the last ``days`` days" ending at the as-of date: transaction
    dates ``d`` with ``start < d <= end`` (ISO dates compare as strings)."""

    start: str
    end: str

    @classmethod
    def ending(cls, as_of: str, days: int = 30) -> RecentWindow:
        end = datetime.date.fromisoformat(as_of)
        return cls((end - datetime.timedelta(days=days)).isoformat(), end.isoformat())


def add_transaction(state: list[Any], tx: Mapping[str, Any], window: RecentWindow) -> Part:
    """Fold one transaction into a client's state; its :func:`part` of the totals."""
    brl = cents(tx["amount_brl"])
    category = tx["category"]
    if category == INCOME_CATEGORY:
        state[INCOME] += brl
        state[INCOME_N] += 1
    else:
        state[EXPENSE] += brl
    state[TX] += 1
    if window.start < tx["date"] <= window.end:
        state[RECENT] += 1
    suspicious = int(tx["suspicious"])
    state[SUSPICIOUS] += suspicious
    return (category, tx["currency"], cents(tx["amount"]), brl, suspicious)


def score_of(record: Mapping[str, Any]) -> Score:
    return (record["score"], record["monthly_income"])


def profile(client_id: int, state: Sequence[Any], score: Score | None) -> dict[str, Any]:
    """The ``client_profiles`` row of a client (see the demo issue for the formulas).

    On every change of every client (~3 µs): written out with the common cases first
    (no suspicious transaction, no income, a score in range) rather than ``min``/``max``
    calls, and :func:`round2`."""
    income, income_n, expense, transactions, recent, suspicious = state[:6]
    income_avg = income / income_n / 100 if income_n else 0.0
    balance = (income - expense) / 100
    share = suspicious / transactions if suspicious else 0.0  # suspicious <= transactions
    if score is not None:
        base, income_ref = score
        if base is None:
            base = 500  # a score record without a score (an empty CSV field)
    else:
        base, income_ref = 500, income_avg if income_avg > 1000.0 else 1000.0
    if income_ref is None or not income_ref > 0:
        # none or zero on file: as without a score
        income_ref = income_avg if income_avg > 1000.0 else 1000.0
    raw = (
        base
        + 40 * math.tanh(balance / (3 * income_ref))
        + 4 * (recent if recent < 10 else 10)
        - 150 * share
    )
    new_score = round(raw)
    if new_score > 900:
        new_score = 900
    elif new_score < 300:
        new_score = 300
    if new_score < 500 or share > 0.30:
        risk, loan = "HIGH", 0.0  # a loan factor of 0: round(0.0 * x, 2)
    else:
        if new_score < 700 or share > 0.10:
            risk, factor = "MEDIUM", 0.5
        else:
            risk, factor = "LOW", 1.0
        loan = round2(
            (3 * income_ref + 0.1 * (balance if balance > 0 else 0)) * new_score / 900 * factor
        )
    return {
        "client_id": client_id,
        "income_avg": round2(income_avg) if income_n else 0.0,
        "balance": balance,
        "tx_30d": recent,
        "suspicious_share": round(share, 6) if suspicious else 0.0,
        "new_score": new_score,
        "risk_class": risk,
        "loan_limit": loan,
    }


@dataclass(slots=True)
class Totals:
    """Pipeline-wide figures over every stored transaction and every valid client.

    Kept incrementally: :meth:`add_part` per transaction, :meth:`client` when a valid
    client's transaction count grows or a client becomes valid. A client's count never
    decreases, so the top client (most transactions, the smallest id on ties) is a
    running maximum.
    """

    transactions: int = 0
    suspicious: int = 0
    per_category: dict[str, int] = field(default_factory=dict)
    volume_cents: dict[str, int] = field(default_factory=dict)  # original currency
    volume_brl_cents: dict[str, int] = field(default_factory=dict)
    valid: int = 0  # clients with a (valid) client record
    active: int = 0  # of those, with a transaction in the last 30 days
    top: tuple[int, int] | None = None  # (-transactions, client id): the smallest wins

    def add_parts(self, parts: list[Part]) -> None:
        """:meth:`add_part` for each of ``parts`` (the loop written out: ~1 µs a part
        less)."""
        per_category, volume, volume_brl = (
            self.per_category,
            self.volume_cents,
            self.volume_brl_cents,
        )
        suspicious = 0
        for category, currency, amount, brl, flagged in parts:
            suspicious += flagged
            per_category[category] = per_category.get(category, 0) + 1
            volume[currency] = volume.get(currency, 0) + amount
            volume_brl[currency] = volume_brl.get(currency, 0) + brl
        self.transactions += len(parts)
        self.suspicious += suspicious

    def add_part(self, share: Part) -> None:
        category, currency, amount, brl, suspicious = share
        self.transactions += 1
        self.suspicious += suspicious
        self.per_category[category] = self.per_category.get(category, 0) + 1
        self.volume_cents[currency] = self.volume_cents.get(currency, 0) + amount
        self.volume_brl_cents[currency] = self.volume_brl_cents.get(currency, 0) + brl

    def client(
        self, client_id: int, transactions: int, became_valid: bool, became_active: bool
    ) -> None:
        """A valid client now has ``transactions``; it may have just become valid or
        active."""
        self.valid += became_valid
        self.active += became_active
        key = (-transactions, client_id)
        if self.top is None or key < self.top:
            self.top = key


def global_metrics(totals: Totals) -> list[dict[str, Any]]:
    """The ``metrics`` rows: ``{"name": ..., "value": <JSON-able>}``."""
    valid, top = totals.valid, totals.top
    return [
        {
            "name": "active_clients_pct",
            "value": round(100 * totals.active / valid, 4) if valid else 0.0,
        },
        {
            "name": "top_client",
            "value": None if top is None else {"client_id": top[1], "transactions": -top[0]},
        },
        {
            "name": "transactions_per_category",
            "value": {c: totals.per_category[c] for c in sorted(totals.per_category)},
        },
        {
            "name": "suspicious_pct",
            "value": round(100 * totals.suspicious / totals.transactions, 4)
            if totals.transactions
            else 0.0,
        },
        {
            "name": "volume_per_currency",
            "value": {
                c: {
                    "amount": totals.volume_cents[c] / 100,
                    "amount_brl": totals.volume_brl_cents[c] / 100,
                }
                for c in sorted(totals.volume_cents)
            },
        },
        {"name": "valid_clients", "value": valid},
        {"name": "transactions", "value": totals.transactions},
    ]


def metric_rows(totals: Totals) -> list[dict[str, Any]]:
    """The ``metrics`` table's rows (values as JSON text)."""
    return [
        {"name": m["name"], "value": json.dumps(m["value"], ensure_ascii=False)}
        for m in global_metrics(totals)
    ]
