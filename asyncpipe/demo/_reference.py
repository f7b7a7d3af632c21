"""The reference: every output table recomputed by a plain, non-streaming program.

It reads the same inputs with the standard library (``sqlite3``, ``csv``, ``str.split``),
applies the rules of ``_domain`` in one pass, and predicts with the same model in this
process. :func:`compare` then checks the streaming pipeline's database against it, table
by table and column by column (money to the cent). ``--verify`` and the tests use both.
"""

from __future__ import annotations

import csv
import datetime
import json
import math
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._data import SCORE_FIELDS, SCORE_TYPES, TXT_FIELDS, TXT_TYPES, inbox_path, timer_batch
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
from ._model import RiskModel
from ._pipeline import SCHEMAS, DemoConfig

__all__ = ["Expected", "compare", "compute"]

_MONEY = {
    "amount",
    "amount_brl",
    "balance",
    "income_avg",
    "loan_limit",
    "monthly_income",
    "credit_limit",
}


@dataclass
class Expected:
    """What the results database must hold: table -> key -> row, and dead letters per
    node."""

    tables: dict[str, dict[Any, dict[str, Any]]] = field(default_factory=dict)
    dead_letters: Counter[str] = field(default_factory=Counter)


def compute(config: DemoConfig, model: bytes) -> Expected:
    expected = Expected()
    dead = expected.dead_letters
    conn = sqlite3.connect(config.input_db)
    conn.row_factory = sqlite3.Row
    try:
        raw_clients = [dict(r) for r in conn.execute("SELECT * FROM clients ORDER BY id")]
        history = [dict(r) for r in conn.execute("SELECT * FROM transactions ORDER BY id")]
    finally:
        conn.close()

    clients: dict[int, dict[str, Any]] = {}
    for record in raw_clients:
        result = normalize_client(record)
        if isinstance(result, str):
            dead["normalize"] += 1
        else:
            clients[result["id"]] = result

    scores: dict[str, dict[str, Any]] = {}
    for record in _inbox_scores(config, dead):
        cpf = cpf_digits(str(record["cpf"] or ""))
        if cpf is None or score_problem(record) is not None:
            dead["scores"] += 1
        else:
            scores[cpf] = {**record, "cpf": cpf}

    new = list(_inbox_transactions(config, dead))
    for run in range(config.timer_runs):
        new.extend(timer_batch(config.scale, run))
    for record in new:
        record["category"] = classify(record["description"])

    converted = []
    for record in history + new:
        brl = convert(record, config.rates)
        if isinstance(brl, str):
            dead["convert"] += 1
        else:
            converted.append({**record, "amount_brl": brl})
    flags = RiskModel(model).predict(converted)
    transactions: dict[int, dict[str, Any]] = {}
    for record, flag in zip(converted, flags, strict=True):
        record["suspicious"] = flag
        transactions[record["id"]] = record

    as_of = config.scale.as_of
    recent_from, _ = recent_window(datetime.date.fromisoformat(as_of))
    states: dict[int, ClientState] = {}
    totals = Totals()
    for tx in transactions.values():
        states.setdefault(tx["client_id"], ClientState()).add(tx, recent_from, as_of)
        totals.add(tx)
    for client_id, client in clients.items():
        states.setdefault(client_id, ClientState()).client = client
    profiles = {
        client_id: profile(client_id, states[client_id], scores.get(client["cpf"]))
        for client_id, client in clients.items()
    }
    metrics = {
        m["name"]: {"name": m["name"], "value": json.dumps(m["value"], ensure_ascii=False)}
        for m in global_metrics(totals, states.items())
    }
    expected.tables = {
        "clients": clients,
        "scores": scores,
        "transactions": transactions,
        "client_profiles": profiles,
        "metrics": metrics,
    }
    return expected


def _inbox_transactions(config: DemoConfig, dead: Counter[str]) -> Iterator[dict[str, Any]]:
    for path in _inbox_files(config, "*.txt"):
        lines = path.read_text(encoding="utf-8").splitlines()
        rows = ([f.strip() for f in line.strip().split("|")] for line in lines if line.strip())
        yield from _typed(rows, TXT_TYPES, TXT_FIELDS, dead, "inbox_transactions")


def _inbox_scores(config: DemoConfig, dead: Counter[str]) -> Iterator[dict[str, Any]]:
    for path in _inbox_files(config, "*.csv"):
        with open(path, newline="", encoding="utf-8") as file:
            rows = (fields for fields in csv.reader(file) if fields)
            yield from _typed(rows, SCORE_TYPES, SCORE_FIELDS, dead, "inbox_scores")


def _inbox_files(config: DemoConfig, pattern: str) -> list[Path]:
    """The inbox's files the watcher would feed (dot-files are never fed)."""
    files = inbox_path(config.workdir).glob(pattern)
    return sorted(path for path in files if not path.name.startswith("."))


def _typed(
    rows: Iterator[list[str]],
    types: Mapping[str, Callable[[str], Any]],
    fields: Sequence[str],
    dead: Counter[str],
    node: str,
) -> Iterator[dict[str, Any]]:
    """Records from a header row and data rows, as the text sources make them: a row with
    the wrong number of fields, or a typed field that does not convert, is a dead letter;
    an empty typed field is None."""
    names = next(rows, None)
    if names is None:
        return
    for values in rows:
        if len(values) != len(names):
            dead[node] += 1
            continue
        record: dict[str, Any] = dict(zip(names, values, strict=True))
        try:
            for column, kind in types.items():
                record[column] = kind(record[column]) if record[column] else None
        except ValueError:
            dead[node] += 1
            continue
        yield {name: record[name] for name in fields}


def compare(results: Path, expected: Expected, *, limit: int = 20) -> list[str]:
    """The differences between the results database and ``expected`` (empty: equal)."""
    problems: list[str] = []
    conn = sqlite3.connect(results)
    conn.row_factory = sqlite3.Row
    try:
        for table, want in expected.tables.items():
            key, schema = SCHEMAS[table]
            columns = list(schema)
            got = {row[key]: dict(row) for row in conn.execute(f"SELECT * FROM {table}")}
            missing = sorted(set(want) - set(got), key=str)
            extra = sorted(set(got) - set(want), key=str)
            if missing:
                problems.append(f"{table}: {len(missing)} rows missing, e.g. {key}={missing[:3]}")
            if extra:
                problems.append(f"{table}: {len(extra)} unexpected rows, e.g. {key}={extra[:3]}")
            for k in sorted(set(want) & set(got), key=str):
                for column in columns:
                    a, b = got[k].get(column), want[k].get(column)
                    if not _same(column, a, b):
                        problems.append(f"{table} {key}={k}: {column} is {a!r}, expected {b!r}")
                        if len(problems) >= limit:
                            return problems
        counts = Counter(
            dict(conn.execute("SELECT node, count(*) FROM dead_letters GROUP BY node").fetchall())
        )
        if counts != expected.dead_letters:
            problems.append(
                f"dead letters per node: {dict(sorted(counts.items()))}, "
                f"expected {dict(sorted(expected.dead_letters.items()))}"
            )
    finally:
        conn.close()
    return problems


def _same(column: str, a: Any, b: Any) -> bool:
    if column in _MONEY and isinstance(a, int | float) and isinstance(b, int | float):
        return abs(a - b) < 0.005  # to the cent
    if column == "value" and isinstance(a, str) and isinstance(b, str):
        return _same_json(json.loads(a), json.loads(b))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)


def _same_json(a: Any, b: Any) -> bool:
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, float | int) and isinstance(b, float | int):
        return abs(a - b) < 0.005
    return bool(a == b)
