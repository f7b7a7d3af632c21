"""The demo's per-item fast paths answer exactly what the plain formulas answer."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from asyncpipe.demo._domain import RATES, amount_brl, amount_problem, convert, round2
from asyncpipe.demo._figures import Score, profile


def test_round2_is_round_to_two_decimals_bit_for_bit() -> None:
    rng = random.Random(3)
    values = [
        *(rng.uniform(0, 1e6) for _ in range(8_000)),
        *(rng.uniform(-1e12, 1e12) for _ in range(8_000)),
        *(rng.randrange(10**9) / 1000 for _ in range(8_000)),  # halves of a cent
        *(rng.randrange(10**9) / 200 for _ in range(8_000)),
        0.0,
        -0.0,
        -0.001,
        0.005,
        1.005,
        2.675,
        1e13,
        1e300,
        math.inf,
        -math.inf,
    ]
    for x in values:
        assert repr(round2(x)) == repr(round(x, 2)), x
    assert math.isnan(round2(math.nan))


def plain_convert(record: dict[str, Any], rates: dict[str, float]) -> float | str:
    """``convert`` without its fast path (the checks one after another)."""
    problem = amount_problem(record["amount"])
    if problem is not None:
        return problem
    brl = amount_brl(record["amount"], record["currency"], rates)
    if brl is None:
        return f"unknown currency {record['currency']!r}"
    return amount_problem(brl, "amount_brl", 10_000_000_000_000.0) or brl


@pytest.mark.parametrize("rates", [RATES, {"BRL": 1.0, "USD": 1e9, "EUR": -2.0, "XXX": math.nan}])
def test_convert_answers_what_the_checks_one_by_one_answer(rates: dict[str, float]) -> None:
    rng = random.Random(5)
    amounts: list[Any] = [
        *(round(rng.uniform(0, 10_000), 2) for _ in range(5_000)),
        *(rng.uniform(0, 2e9) for _ in range(500)),
        0.0,
        1e9,
        -0.01,
        math.nan,
        math.inf,
        7,
        True,
        None,
        "1",
    ]
    for amount in amounts:
        for currency in ["BRL", "USD", "EUR", "XXX", "JPY"]:
            record = {"amount": amount, "currency": currency}
            assert repr(convert(record, rates)) == repr(plain_convert(record, rates))


def plain_profile(client_id: int, state: list[Any], score: Score | None) -> dict[str, Any]:
    """The profile's formulas as the demo issue states them."""
    income, income_n, expense, transactions, recent, suspicious = state[:6]
    income_avg = income / income_n / 100 if income_n else 0.0
    balance = (income - expense) / 100
    share = suspicious / transactions if transactions else 0.0
    if score is not None:
        base, income_ref = score
        if base is None:
            base = 500
    else:
        base, income_ref = 500, max(income_avg, 1000.0)
    if income_ref is None or not income_ref > 0:
        income_ref = max(income_avg, 1000.0)
    raw = base + 40 * math.tanh(balance / (3 * income_ref)) + 4 * min(recent, 10) - 150 * share
    new_score = min(900, max(300, round(raw)))
    if new_score < 500 or share > 0.30:
        risk, factor = "HIGH", 0.0
    elif new_score < 700 or share > 0.10:
        risk, factor = "MEDIUM", 0.5
    else:
        risk, factor = "LOW", 1.0
    loan = round((3 * income_ref + 0.1 * max(balance, 0)) * new_score / 900 * factor, 2)
    return {
        "client_id": client_id,
        "income_avg": round(income_avg, 2),
        "balance": balance,
        "tx_30d": recent,
        "suspicious_share": round(share, 6),
        "new_score": new_score,
        "risk_class": risk,
        "loan_limit": loan,
    }


def test_profile_is_the_formulas_bit_for_bit() -> None:
    rng = random.Random(11)
    for client_id in range(20_000):
        transactions = rng.randrange(60)
        suspicious = rng.randrange(transactions + 1)
        income_n = rng.randrange(5)
        state = [
            rng.randrange(10 ** rng.randrange(1, 12)) if income_n else 0,
            income_n,
            rng.randrange(10 ** rng.randrange(1, 12)),
            transactions,
            rng.randrange(transactions + 1),
            suspicious,
            "12345678909",
            None,
        ]
        score: Score | None = rng.choice(
            [
                None,
                (None, None),
                (rng.randrange(1001), None),
                (rng.randrange(1001), 0.0),
                (rng.randrange(1001), round(rng.uniform(0, 10 ** rng.randrange(1, 10)), 2)),
            ]
        )
        assert repr(profile(client_id, state, score)) == repr(
            plain_profile(client_id, state, score)
        )
