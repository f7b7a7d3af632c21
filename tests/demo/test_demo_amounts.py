"""The demo and poisonous amounts: finite but huge (or not finite) amounts are dead letters
with their reason, wherever they come from, and never cost the valid items beside them."""

from __future__ import annotations

import contextvars
import json
import pickle
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from demo_helpers import AS_OF, SMALL, config_for, model_for, run_demo

from asyncpipe._handler import Rejection, collect_rejections
from asyncpipe.demo._data import inbox_path
from asyncpipe.demo._domain import CATEGORIES, amount_problem
from asyncpipe.demo._model import RiskModel, features
from asyncpipe.demo._reference import compare, compute


@pytest.mark.parametrize(
    ("amount", "reason"),
    [
        (3.5e38, "amount 3.5e+38 outside 0..1e9"),
        (1e308, "amount 1e+308 outside 0..1e9"),
        (-0.01, "amount -0.01 outside 0..1e9"),
        (10**400, f"amount {10**400!r} outside 0..1e9"),  # an int too big for a float
        (float("nan"), "amount nan is not finite"),
        (float("inf"), "amount inf is not finite"),
        (None, "amount None is not a number"),
        ("12,50", "amount '12,50' is not a number"),
        (True, "amount True is not a number"),
        (0, None),
        (12.5, None),
        (1e9, None),
    ],
)
def test_an_amount_is_a_finite_number_within_the_bound(amount: Any, reason: str | None) -> None:
    assert amount_problem(amount) == reason


def test_the_risk_model_flags_what_scikit_learns_predict_does() -> None:
    model = RiskModel(model_for(SMALL))
    rng = random.Random(7)
    batch = [
        {
            "amount_brl": round(rng.expovariate(1 / 2000), 2) if i else 1e13,  # the bound
            "date": f"2026-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
            "currency": rng.choice(["BRL", "USD", "EUR", "XYZ"]),
            "category": rng.choice([*CATEGORIES, "unknown"]),
        }
        for i in range(2000)
    ]
    flags = model.predict(batch)  # the fitted tree without scikit-learn's input checks
    expected = [int(flag) for flag in model.model.predict(features(batch))]
    assert flags == expected and 0 < sum(flags) < len(flags)


def test_the_risk_model_dead_letters_an_amount_past_float32_and_predicts_the_rest() -> None:
    model = RiskModel(model_for(SMALL))
    model.model = pickle.loads(model.model_bytes)
    tx = {"date": AS_OF, "currency": "BRL", "category": "Lazer"}
    batch = [{**tx, "id": 1, "amount_brl": 3.5e38}, {**tx, "id": 2, "amount_brl": 20.0}]

    def handle() -> tuple[Any, list[Rejection]]:
        rejections = collect_rejections()
        return model.handle(batch), rejections

    out, rejections = contextvars.copy_context().run(handle)  # as in a worker
    assert out is not None and [r["id"] for r in out] == [2] and out[0]["suspicious"] in (0, 1)
    assert [(r.payload["id"], r.reason, r.index) for r in rejections] == [
        (1, "amount_brl 3.5e+38 outside 0..1e13", 0)
    ]


TXT_LINES = [  # id|client_id|date|amount|currency|description
    f"900001|1|{AS_OF}|3.5e38|BRL|PIX FULANO",
    f"900002|2|{AS_OF}|1e308|USD|LOJA CENTRO",
    f"900003|3|{AS_OF}|nan|BRL|UBER CENTRO",
    f"900004|4|{AS_OF}|12.50|BRL|UBER CENTRO",
]


def add_poison(workdir: Path) -> None:
    """Huge amounts in an inbox TXT file, the history database and a scores CSV file,
    each beside a valid row."""
    inbox = inbox_path(workdir)
    (inbox / "new_transactions_1.txt").write_text(
        (inbox / "new_transactions_1.txt").read_text() + "\n".join(TXT_LINES) + "\n"
    )
    conn = sqlite3.connect(workdir / "input" / "bank.db")
    with conn:
        conn.executemany(
            "INSERT INTO transactions VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (900010, 5, AS_OF, 3.5e38, "BRL", "PIX X", "Transferências"),
                (900011, 6, AS_OF, 1e308, "USD", "LOJA X", "Compras"),
                (900012, 7, AS_OF, 99.0, "BRL", "LOJA X", "Compras"),
            ],
        )
    conn.close()
    (inbox / "scores_9.csv").write_text(
        "cpf,score,monthly_income,credit_limit,updated_at\n"
        f"52998224725,700,1e308,1000.00,{AS_OF}\n"
        f"11144477735,700,5000.00,1000.00,{AS_OF}\n"
    )


async def test_huge_amounts_are_dead_letters_with_their_reason_and_the_rest_is_stored(
    tmp_path: Path,
) -> None:
    config = config_for(tmp_path, max_workers=1)
    add_poison(config.workdir)
    await run_demo(config)

    conn = sqlite3.connect(config.results)
    try:
        stored = {r[0] for r in conn.execute("SELECT id FROM transactions WHERE id >= 900000")}
        scores = {r[0] for r in conn.execute("SELECT cpf FROM scores")}
        letters = conn.execute(
            "SELECT node, error_message, payload FROM dead_letters WHERE node IN "
            "('convert', 'scores', 'risk')"
        ).fetchall()
    finally:
        conn.close()
    assert stored == {900004, 900012}
    by_id = {
        json.loads(payload).get("id", json.loads(payload).get("cpf")): (node, message)
        for node, message, payload in letters
    }
    assert by_id[900001] == by_id[900010] == ("convert", "amount 3.5e+38 outside 0..1e9")
    assert by_id[900002] == by_id[900011] == ("convert", "amount 1e+308 outside 0..1e9")
    assert by_id[900003] == ("convert", "amount nan is not finite")
    assert by_id["52998224725"] == ("scores", "monthly_income 1e+308 outside 0..1e9")
    assert "11144477735" in scores
    # The reference applies the same rule: --verify still passes.
    assert compare(config.results, compute(config, model_for(config.scale))) == []
