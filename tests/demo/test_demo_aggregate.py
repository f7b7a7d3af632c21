"""The demo's aggregator: keyed stateful stages joining clients, scores and transactions,
over a real SQLite state store, against the reference's fold of the same inputs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from demo_helpers import AS_OF

from asyncpipe import HandlerNode, PipelineExecutor
from asyncpipe.demo._aggregate import (
    ClientProfiles,
    GlobalTotals,
    JoinScores,
    ProfileRows,
    Rows,
    client_key,
    is_link,
)
from asyncpipe.demo._reference import results
from asyncpipe.state import SqliteStateStore
from asyncpipe.testing import CollectingSink

CPF_A, CPF_B = "52998224725", "11144477735"
Batch = tuple[str, str, list[dict[str, Any]]]  # (entry node, origin, records)


def client(client_id: int, cpf: str) -> dict[str, Any]:
    return {"id": client_id, "name": "X", "cpf": cpf, "birth_date": "1990-01-01", "address": ""}


def score(cpf: str, value: int, income: float | None = 9000.0) -> dict[str, Any]:
    return {
        "cpf": cpf,
        "score": value,
        "monthly_income": income,
        "credit_limit": 1.0,
        "updated_at": AS_OF,
    }


def tx(tx_id: int, client_id: int, amount: float = 100.0, date: str = AS_OF) -> dict[str, Any]:
    category = "Salário" if tx_id % 3 == 0 else "Compras"
    return {
        "id": tx_id,
        "client_id": client_id,
        "date": date,
        "amount": amount,
        "currency": "USD" if tx_id % 2 else "BRL",
        "amount_brl": amount * (5.0 if tx_id % 2 else 1.0),
        "description": "LOJA",
        "category": category,
        "suspicious": int(tx_id % 5 == 0),
    }


class Stages:
    """join -> aggregate -> totals, fed through entry nodes, outputs collected."""

    def __init__(self, state: Path) -> None:
        self.profiles = CollectingSink()
        self.metrics = CollectingSink()
        clients, scores, transactions = (HandlerNode(n) for n in ("clients", "scores", "tx"))
        join = HandlerNode("join", JoinScores(), [clients, scores], key=lambda r: r["cpf"])
        links = HandlerNode("links", Rows(is_link), [join])
        aggregate = HandlerNode(
            "aggregate", ClientProfiles(AS_OF), [links, transactions], key=client_key
        )
        totals = HandlerNode("totals", GlobalTotals(), [aggregate], key=lambda r: 0)
        rows = HandlerNode("profiles", ProfileRows(), [aggregate])
        self.executor = PipelineExecutor(
            [clients, scores, transactions],
            [
                join,
                links,
                aggregate,
                totals,
                rows,
                HandlerNode("store_profiles", self.profiles, [rows]),
                HandlerNode("store_metrics", self.metrics, [totals]),
            ],
            state_store=SqliteStateStore(state),
        )

    async def feed(self, batches: Sequence[Batch]) -> None:
        """Each batch in turn, each acknowledged before the next is sent."""
        async with asyncio.timeout(30), self.executor:
            for node, origin, records in batches:
                await (await self.executor.submit(node, records, origin=origin))

    def latest_profiles(self) -> dict[int, dict[str, Any]]:
        return {row["client_id"]: row for message in self.profiles.items for row in message}

    def latest_metrics(self) -> dict[str, Any]:
        return {row["name"]: json.loads(row["value"]) for m in self.metrics.items for row in m}


def expected(
    batches: Sequence[Batch],
) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
    """The reference's fold of the batches (the last record of each key wins)."""
    clients: dict[int, dict[str, Any]] = {}
    scores: dict[str, dict[str, Any]] = {}
    transactions: dict[int, dict[str, Any]] = {}
    for node, _, records in batches:
        for record in records:
            if node == "clients":
                clients[record["id"]] = record
            elif node == "scores":
                scores[record["cpf"]] = record
            else:
                transactions[record["id"]] = record
    profiles, metrics = results(clients, scores, transactions.values(), AS_OF)
    return profiles, {name: json.loads(row["value"]) for name, row in metrics.items()}


@pytest.mark.parametrize("score_first", [True, False])
async def test_a_score_reaches_every_client_with_that_cpf_in_any_order(
    score_first: bool, tmp_path: Path
) -> None:
    clients: Batch = ("clients", "c", [client(1, CPF_A), client(2, CPF_A)])
    scores: Batch = ("scores", "s", [score(CPF_A, 850)])
    stages = Stages(tmp_path / "state.db")
    await stages.feed([scores, clients] if score_first else [clients, scores])
    assert {i: p["new_score"] for i, p in stages.latest_profiles().items()} == {1: 850, 2: 850}


async def test_a_client_sent_again_with_another_cpf_follows_that_cpf_only(tmp_path: Path) -> None:
    batches: list[Batch] = [
        ("scores", "s1", [score(CPF_A, 850), score(CPF_B, 320)]),
        ("clients", "c1", [client(1, CPF_A)]),
        ("tx", "t1", [tx(10, 1, 2000.0), tx(11, 1)]),
        ("clients", "c2", [client(1, CPF_B)]),  # its CPF changes: B's score now
        ("scores", "s2", [score(CPF_A, 900)]),  # the old CPF's new score: not its own
    ]
    stages = Stages(tmp_path / "state.db")
    await stages.feed(batches)
    profiles, metrics = expected(batches)
    assert stages.latest_profiles() == profiles
    assert profiles[1]["new_score"] < 500  # from B's 320, not A's 900
    assert stages.latest_metrics() == metrics


async def test_state_survives_a_restart_and_a_resent_batch_counts_once(tmp_path: Path) -> None:
    first: list[Batch] = [
        ("clients", "c1", [client(i, CPF_A if i % 2 else CPF_B) for i in range(1, 6)]),
        ("tx", "t1", [tx(i, 1 + i % 7, 10.0 * i) for i in range(1, 40)]),
        ("scores", "s1", [score(CPF_A, 700, None)]),
    ]
    second: list[Batch] = [
        first[1],  # t1 again (its reply was lost, say): already applied
        ("tx", "t2", [tx(i, 1 + i % 7, 3.5 * i, "2026-09-01") for i in range(40, 90)]),
        ("clients", "c2", [client(6, CPF_A), client(7, CPF_B)]),
        ("scores", "s2", [score(CPF_B, 610)]),
    ]
    state = tmp_path / "state.db"
    await Stages(state).feed(first)
    restarted = Stages(state)
    await restarted.feed(second)
    profiles, metrics = expected(first + second[1:])
    assert restarted.latest_metrics() == metrics  # every transaction counted once
    changed = restarted.latest_profiles()
    assert changed == {i: profiles[i] for i in changed}
    assert set(changed) == set(profiles)  # every client got a new profile in the second run
