"""The bank's gRPC intake rules: what a client, transaction or score sent must be.

Each converter takes one protobuf item (``Client``, ``Transaction``, ``Score`` of
:mod:`asyncpipe.demo.v1.bank_pb2`) and returns its record, or an
:class:`asyncpipe.ingest.Invalid` with the reason (quoting the offending value, cut short
when long). The rules:

* ids are positive; dates are ISO ``YYYY-MM-DD`` and real days;
* a CPF has 11 digits (punctuation allowed) with valid check digits, and is stored as
  its 11 digits;
* a transaction's amount is a number within 0..``MAX_AMOUNT`` (1e9, so finite) in a known
  currency;
* a score is within 0..1000; income and credit limit are finite and >= 0.

The records' keys are the columns of the demo's tables (``id``, ``client_id``, ``date``,
...), so a sink can upsert them as they are. This is the hot path of every request: plain
attribute reads, each field read once (``MessageToDict`` costs about 7x more, see
PERF.md), and a date already found valid is not parsed again.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable, Iterable
from typing import Any

from ..ingest import Invalid, quoted
from ._domain import MAX_AMOUNT, cpf_digits

__all__ = [
    "DEFAULT_CURRENCIES",
    "client_record",
    "score_record",
    "transaction_converter",
]

DEFAULT_CURRENCIES = frozenset({"BRL", "USD", "EUR"})

_AMOUNT_ABOVE = f"<= {MAX_AMOUNT:.0f}"
_INF = math.inf
_KNOWN_DATES = 4096

Record = dict[str, Any]


def _date_problem(value: str, name: str) -> str | None:
    if len(value) != 10 or value[4] != "-" or value[7] != "-":
        return f"malformed {name} {quoted(value)}: expected YYYY-MM-DD"
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        return f"malformed {name} {quoted(value)}: not a real day"
    return None


def client_record(c: Any) -> Record | Invalid:
    """A ``Client`` message -> ``{id, name, cpf, birth_date, address}``."""
    client_id = c.id
    if client_id <= 0:
        return Invalid(f"invalid client id {client_id}: must be > 0")
    raw_cpf = c.cpf
    cpf = cpf_digits(raw_cpf)
    if cpf is None:
        return Invalid(f"invalid CPF {quoted(raw_cpf)}")
    birth_date = c.birth_date
    problem = _date_problem(birth_date, "birth_date")
    if problem is not None:
        return Invalid(problem)
    name = c.name
    if not name.strip():
        return Invalid("empty name")
    return {
        "id": client_id,
        "name": name,
        "cpf": cpf,
        "birth_date": birth_date,
        "address": c.address,
    }


def transaction_converter(
    currencies: Iterable[str] = DEFAULT_CURRENCIES,
) -> Callable[[Any], Record | Invalid]:
    """The converter of ``Transaction`` messages -> ``{id, client_id, date, amount,
    currency, description, category}`` (``category`` None when the message has none),
    knowing ``currencies``."""
    known = frozenset(currencies)
    expected = sorted(known)
    # Dates already found valid (they repeat across items and batches): not parsed again.
    valid_dates: set[str] = set()

    def transaction_record(t: Any) -> Record | Invalid:
        transaction_id = t.id
        if transaction_id <= 0:
            return Invalid(f"invalid transaction id {transaction_id}: must be > 0")
        client_id = t.client_id
        if client_id <= 0:
            return Invalid(f"invalid client_id {client_id}: must be > 0")
        amount = t.amount
        if not 0 <= amount <= MAX_AMOUNT:  # also catches NaN and infinities
            bound = _AMOUNT_ABOVE if amount > 0 else ">= 0"
            return Invalid(f"invalid amount {amount!r}: must be a finite number {bound}")
        currency = t.currency
        if currency not in known:
            return Invalid(f"unknown currency {quoted(currency)}: expected one of {expected}")
        date = t.date
        if date not in valid_dates:
            problem = _date_problem(date, "date")
            if problem is not None:
                return Invalid(problem)
            if len(valid_dates) >= _KNOWN_DATES:
                valid_dates.clear()  # bounded, whatever clients send
            valid_dates.add(date)
        category = t.category
        if not category and not t.HasField("category"):
            category = None  # unset, as opposed to set to ""
        return {
            "id": transaction_id,
            "client_id": client_id,
            "date": date,
            "amount": amount,
            "currency": currency,
            "description": t.description,
            "category": category,
        }

    return transaction_record


def score_record(s: Any) -> Record | Invalid:
    """A ``Score`` message -> ``{cpf, score, monthly_income, credit_limit, updated_at}``."""
    raw_cpf = s.cpf
    cpf = cpf_digits(raw_cpf)
    if cpf is None:
        return Invalid(f"invalid CPF {quoted(raw_cpf)}")
    score = s.score
    if not 0 <= score <= 1000:
        return Invalid(f"invalid score {score}: must be within 0..1000")
    income = s.monthly_income
    if not income >= 0 or income == _INF:
        return Invalid(f"invalid monthly_income {income!r}: must be a finite number >= 0")
    limit = s.credit_limit
    if not limit >= 0 or limit == _INF:
        return Invalid(f"invalid credit_limit {limit!r}: must be a finite number >= 0")
    updated_at = s.updated_at
    problem = _date_problem(updated_at, "updated_at")
    if problem is not None:
        return Invalid(problem)
    return {
        "cpf": cpf,
        "score": score,
        "monthly_income": income,
        "credit_limit": limit,
        "updated_at": updated_at,
    }
