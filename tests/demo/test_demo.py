"""The bank demo: streaming results equal a plain reference, whatever the arrival order."""

from __future__ import annotations

import asyncio
import csv
import functools
import json
import os
import random
import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from demo_helpers import AS_OF, SMALL, CountingRiskModel, config_for, dump, model_for, run_demo

from asyncpipe import PipelineExecutor
from asyncpipe.demo._data import inbox_path
from asyncpipe.demo._domain import classify, normalize_address, normalize_text
from asyncpipe.demo._pipeline import DemoConfig, reset_outputs
from asyncpipe.demo._reference import compare, compute


def test_normalisation_rules() -> None:
    assert normalize_text("  joão   da\tSilva ") == "JOAO DA SILVA"
    assert normalize_address("Praça da Sé, 10\nCentro") == "PCA. DA SE, 10 CENTRO"
    assert normalize_address("rua Ângelo, 5") == "R. ANGELO, 5"
    assert normalize_address("Avenida Paulista, 1000") == "AV. PAULISTA, 1000"
    assert normalize_address("Travessa Ruano") == "TRAVESSA RUANO"  # whole words only
    assert classify("uber  centro") == "Transporte" and classify("???") == "Outros"


@dataclass
class Baseline:
    config: DemoConfig
    executor: PipelineExecutor
    model_loads: list[str]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Baseline:
    """One run of the demo at a small scale, shared by the tests that only read it; the
    risk model in the process pool (the other runs keep it on the event loop, the
    default): both give the reference's results."""
    workdir = tmp_path_factory.mktemp("demo")
    config = config_for(workdir, max_workers=2, risk_in_pool=True)
    log = workdir / "model-loads.log"
    model = functools.partial(CountingRiskModel, log=str(log))
    executor = asyncio.run(run_demo(config, risk_model=model))
    return Baseline(config, executor, log.read_text().split())


def test_streaming_results_equal_the_reference(baseline: Baseline) -> None:
    config = baseline.config
    assert compare(config.results, compute(config, model_for(config.scale))) == []
    assert baseline.executor.metrics()["store_transactions"].committed > 0


def test_the_risk_model_is_loaded_once_per_worker(baseline: Baseline) -> None:
    pids = baseline.model_loads
    assert 1 <= len(pids) <= 2 and len(set(pids)) == len(pids)
    assert str(os.getpid()) not in pids  # in the workers, not here


async def test_any_arrival_order_and_a_rerun_give_the_same_database(
    baseline: Baseline, tmp_path: Path
) -> None:
    expected = dump(baseline.config.results)
    for seed in (1, 2):  # the second run is also a rerun on the same workdir
        # Rows in a shuffled order, sources started in a shuffled order, inbox files fed in
        # a shuffled order (the watcher feeds by modification time).
        config = config_for(tmp_path, arrival_seed=seed)
        files = sorted(inbox_path(config.workdir).iterdir())
        random.Random(seed).shuffle(files)
        for i, path in enumerate(files):
            os.utime(path, ns=(1_700_000_000_000_000_000 + i, 1_700_000_000_000_000_000 + i))
        await run_demo(config)
        assert dump(config.results) == expected  # the same database, row for row


def test_dirty_rows_are_dead_letters_with_their_reason_and_nothing_else_is_lost(
    baseline: Baseline,
) -> None:
    config = baseline.config
    conn = sqlite3.connect(config.results)
    letters = conn.execute("SELECT node, error_message FROM dead_letters").fetchall()
    stored = {
        table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        for table in ("clients", "transactions", "scores")
    }
    conn.close()
    assert ("normalize", "invalid CPF") in letters
    assert ("scores", "invalid CPF") in letters
    assert any(n == "convert" and m.startswith("unknown currency") for n, m in letters)
    # A source's dead letter names the file and line, then the reason.
    inbox = str(inbox_path(config.workdir))
    assert any(
        n == "inbox_scores" and m.startswith(inbox) and m.endswith(": expected 5 fields, got 6")
        for n, m in letters
    )
    assert any(
        n == "inbox_transactions" and m.startswith(inbox) and "expected 6 fields, got 5" in m
        for n, m in letters
    )
    # Every input row is stored or dead-lettered.
    by_node = Counter(node for node, _ in letters)
    assert stored["clients"] + by_node["normalize"] == SMALL.clients
    all_tx = SMALL.transactions + SMALL.new + 5 * 1000
    assert stored["transactions"] + by_node["convert"] + by_node["inbox_transactions"] == all_tx
    score_lines = sum(
        len(p.read_text().splitlines()) - 1 for p in inbox_path(config.workdir).glob("*.csv")
    )
    assert stored["scores"] + by_node["scores"] + by_node["inbox_scores"] == score_lines


def test_new_transactions_get_their_true_category_and_are_saved_to_a_file(
    baseline: Baseline,
) -> None:
    config = baseline.config
    with open(config.workdir / "input" / "new_categories.csv") as file:
        truth = {int(r["id"]): r["category"] for r in csv.DictReader(file)}
    conn = sqlite3.connect(config.results)
    got = dict(conn.execute("SELECT id, category FROM transactions WHERE id > ?", (2000,)))
    conn.close()
    compared = [tx_id for tx_id in truth if tx_id in got]
    assert len(compared) > 0.97 * len(truth)  # the rest were dirty
    assert all(got[tx_id] == truth[tx_id] for tx_id in compared)
    with open(config.out / "classified_transactions.csv") as file:
        saved = list(csv.DictReader(file))
    assert len(saved) >= len(compared) and all(row["category"] for row in saved)


def test_the_as_of_date_is_pinned_in_the_inputs(baseline: Baseline) -> None:
    params = json.loads((baseline.config.workdir / "input" / "params.json").read_text())
    assert params["as_of"] == AS_OF


def test_a_run_to_completion_starts_over_and_serve_resumes(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    reset_outputs(config)
    for name in ("results.db", "state.db", ".fed-history_db"):
        (config.out / name).write_bytes(b"")  # what an earlier run left
    served = config_for(tmp_path, serve=True)
    reset_outputs(served)  # --serve on the same inputs: resumes from all of it
    assert all((config.out / n).exists() for n in ("results.db", "state.db", ".fed-history_db"))
    reset_outputs(served, inputs_changed=True)  # new inputs: starts over
    assert not any(config.out.iterdir())
    (config.out / "results.db").write_bytes(b"")
    reset_outputs(config)  # a run to completion: starts over
    assert not any(config.out.iterdir())
