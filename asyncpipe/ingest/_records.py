"""From protobuf batches to records: one dict per valid item, one reason per invalid one.

The ingestion service checks each item on its own, so one bad item never costs the
others: what fails a rule is listed in the reply (index + reason) and dead-lettered, the
rest goes into the pipeline. The rules are the bank domain's:

* ids are positive; dates are ISO ``YYYY-MM-DD`` and real days;
* a CPF has 11 digits (punctuation allowed) with valid check digits, and is stored as
  its 11 digits;
* a transaction's amount is a finite number >= 0 in a known currency (``currencies``);
* a score is within 0..1000; income and credit limit are finite and >= 0.

The records' keys are the columns of the demo's tables (``id``, ``client_id``, ``date``,
...), so a sink can upsert them as they are. This is the hot path of every request: plain
attribute loops (``MessageToDict`` costs about 7x more, see PERF.md).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULT_CURRENCIES",
    "Converted",
    "client_records",
    "cpf_digits",
    "is_valid_cpf",
    "score_records",
    "transaction_records",
]

DEFAULT_CURRENCIES = frozenset({"BRL", "USD", "EUR"})

_NOT_DIGITS = str.maketrans("", "", ".-/ ")


@dataclass(slots=True)
class Converted:
    """What became of a batch's items: the valid ones as records, with their position in
    the batch (``indices``), and ``(index, reason)`` for each invalid one."""

    records: list[dict[str, Any]] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    rejections: list[tuple[int, str]] = field(default_factory=list)


def cpf_digits(raw: str) -> str | None:
    """The 11 digits of a valid CPF (``"123.456.789-09"`` or ``"12345678909"``), else None."""
    digits = raw.translate(_NOT_DIGITS)
    if len(digits) != 11 or not digits.isdigit() or not digits.isascii():
        return None
    if digits == digits[0] * 11:
        return None  # 000.000.000-00 and the like pass the arithmetic but are invalid
    numbers = [ord(c) - 48 for c in digits]
    first = sum(n * w for n, w in zip(numbers[:9], range(10, 1, -1), strict=True)) * 10 % 11
    if first % 10 != numbers[9]:
        return None
    second = sum(n * w for n, w in zip(numbers[:10], range(11, 1, -1), strict=True)) * 10 % 11
    if second % 10 != numbers[10]:
        return None
    return digits


def is_valid_cpf(raw: str) -> bool:
    return cpf_digits(raw) is not None


def _date_problem(value: str, name: str) -> str | None:
    if len(value) != 10 or value[4] != "-" or value[7] != "-":
        return f"malformed {name} {value!r}: expected YYYY-MM-DD"
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        return f"malformed {name} {value!r}: not a real day"
    return None


def _convert(items: Iterable[Any], check: Callable[[Any], dict[str, Any] | str]) -> Converted:
    out = Converted()
    records, indices, rejections = out.records, out.indices, out.rejections
    for index, item in enumerate(items):
        result = check(item)
        if type(result) is str:
            rejections.append((index, result))
        else:
            records.append(result)  # type: ignore[arg-type]
            indices.append(index)
    return out


def client_records(items: Iterable[Any]) -> Converted:
    """``Client`` messages -> ``{id, name, cpf, birth_date, address}`` records."""

    def check(c: Any) -> dict[str, Any] | str:
        if c.id <= 0:
            return f"invalid client id {c.id}: must be > 0"
        cpf = cpf_digits(c.cpf)
        if cpf is None:
            return f"invalid CPF {c.cpf!r}"
        problem = _date_problem(c.birth_date, "birth_date")
        if problem is not None:
            return problem
        if not c.name.strip():
            return "empty name"
        return {
            "id": c.id,
            "name": c.name,
            "cpf": cpf,
            "birth_date": c.birth_date,
            "address": c.address,
        }

    return _convert(items, check)


def transaction_records(
    items: Iterable[Any], currencies: frozenset[str] = DEFAULT_CURRENCIES
) -> Converted:
    """``Transaction`` messages -> ``{id, client_id, date, amount, currency, description,
    category}`` records (``category`` None when the message has none)."""

    def check(t: Any) -> dict[str, Any] | str:
        if t.id <= 0:
            return f"invalid transaction id {t.id}: must be > 0"
        if t.client_id <= 0:
            return f"invalid client_id {t.client_id}: must be > 0"
        amount = t.amount
        if not amount >= 0 or amount == math.inf:  # also catches NaN
            return f"invalid amount {amount!r}: must be a finite number >= 0"
        currency = t.currency
        if currency not in currencies:
            return f"unknown currency {currency!r}: expected one of {sorted(currencies)}"
        date = t.date
        if len(date) != 10 or date[4] != "-" or date[7] != "-":
            return f"malformed date {date!r}: expected YYYY-MM-DD"
        try:
            datetime.date.fromisoformat(date)
        except ValueError:
            return f"malformed date {date!r}: not a real day"
        return {
            "id": t.id,
            "client_id": t.client_id,
            "date": date,
            "amount": amount,
            "currency": currency,
            "description": t.description,
            "category": t.category if t.HasField("category") else None,
        }

    return _convert(items, check)


def score_records(items: Iterable[Any]) -> Converted:
    """``Score`` messages -> ``{cpf, score, monthly_income, credit_limit, updated_at}``."""

    def check(s: Any) -> dict[str, Any] | str:
        cpf = cpf_digits(s.cpf)
        if cpf is None:
            return f"invalid CPF {s.cpf!r}"
        if not 0 <= s.score <= 1000:
            return f"invalid score {s.score}: must be within 0..1000"
        for name in ("monthly_income", "credit_limit"):
            value = getattr(s, name)
            if not value >= 0 or value == math.inf:
                return f"invalid {name} {value!r}: must be a finite number >= 0"
        problem = _date_problem(s.updated_at, "updated_at")
        if problem is not None:
            return problem
        return {
            "cpf": cpf,
            "score": s.score,
            "monthly_income": s.monthly_income,
            "credit_limit": s.credit_limit,
            "updated_at": s.updated_at,
        }

    return _convert(items, check)
