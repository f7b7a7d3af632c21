"""The reference: every output table recomputed by a plain, non-streaming program.

It reads the same inputs with the standard library (``sqlite3``, ``csv``, ``str.split``),
applies the rules of ``_domain`` in one pass, and predicts with the same model in this
process. :func:`compare` then checks the streaming pipeline's database against it, table
by table and column by column (money to the cent). ``--verify`` and the tests use both.
"""

from __future__ import annotations

import csv
import json
import math
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._data import SCORE_FIELDS, SCORE_TYPES, TXT_FIELDS, TXT_TYPES, inbox_path, timer_batch
from ._database import DEAD_LETTERS, ResultsDatabase, SqliteResults
from ._domain import classify, convert, cpf_digits, normalize_client, score_problem
from ._figures import (
    RECENT,
    TX,
    RecentWindow,
    Totals,
    add_transaction,
    metric_rows,
    new_client,
    profile,
    score_of,
)
from ._model import RiskModel
from ._pipeline import SCHEMAS, DemoConfig, unfed

__all__ = ["Expected", "check_served", "compare", "compute", "results"]

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

    profiles, metrics = results(clients, scores, transactions.values(), config.scale.as_of)
    expected.tables = {
        "clients": clients,
        "scores": scores,
        "transactions": transactions,
        "client_profiles": profiles,
        "metrics": metrics,
    }
    return expected


def results(
    clients: Mapping[int, Mapping[str, Any]],
    scores: Mapping[str, Mapping[str, Any]],
    transactions: Iterable[Mapping[str, Any]],
    as_of: str,
) -> tuple[dict[int, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The ``client_profiles`` and ``metrics`` rows (by key) that these clients, scores
    (by CPF) and transactions (one per id) make, folded in one pass."""
    window = RecentWindow.ending(as_of)
    states: dict[int, list[Any]] = {}
    totals = Totals()
    for tx in transactions:
        state = states.get(tx["client_id"])
        if state is None:
            state = states[tx["client_id"]] = new_client()
        totals.add_part(add_transaction(state, tx, window))
    profiles = {}
    for client_id, client in clients.items():
        state = states.get(client_id) or new_client()
        totals.client(client_id, state[TX], True, state[RECENT] >= 1)
        score = scores.get(client["cpf"])
        profiles[client_id] = profile(client_id, state, None if score is None else score_of(score))
    return profiles, {m["name"]: m for m in metric_rows(totals)}


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


def compare(results: Path | ResultsDatabase, expected: Expected, *, limit: int = 20) -> list[str]:
    """The differences between the results database (a SQLite file, or any
    :class:`~._database.ResultsDatabase`) and ``expected`` (empty: equal)."""
    database = (
        SqliteResults(results, results.with_name("state.db"))
        if isinstance(results, Path)
        else results
    )
    problems: list[str] = []
    for table, want in expected.tables.items():
        _compare_table(database, table, want, problems, limit)
        if len(problems) >= limit:
            return problems
    counts = _dead_letters(database)
    if counts != expected.dead_letters:
        problems.append(
            f"dead letters per node: {dict(sorted(counts.items()))}, "
            f"expected {dict(sorted(expected.dead_letters.items()))}"
        )
    return problems


def check_served(
    config: DemoConfig,
    model: bytes,
    *,
    sent_dead_letters: Counter[str] | None = None,
    limit: int = 20,
) -> list[str]:
    """The differences between a served results database -- the inputs plus what came
    over gRPC, across any number of restarts -- and the reference over every stored
    input (empty: none):

    * every input was fed to the end (:func:`~._pipeline.unfed`), and every row the
      inputs make (database, inbox, timer) is stored as :func:`compute` makes it, and so
      are their dead letters: per node, as many as the inputs make plus
      ``sent_dead_letters`` (what the caller sent that had to be refused), or at least
      as many when it is not given;
    * ``client_profiles`` and ``metrics`` equal what the stored ``clients``, ``scores``
      and ``transactions`` make (:func:`results`): a batch counted twice, or one
      acknowledged and then missing from the state, shows here.
    """
    left = unfed(config)
    if left:
        return [f"inputs not fed to the end yet (start --serve again): {', '.join(left)}"]
    expected = compute(config, model)
    problems: list[str] = []
    database = config.results_db
    stored: dict[str, dict[Any, dict[str, Any]]] = {}
    for table in ("clients", "scores", "transactions"):
        stored[table] = _compare_table(
            database, table, expected.tables[table], problems, limit, subset=True
        )
    profiles, metrics = results(
        stored["clients"], stored["scores"], stored["transactions"].values(), config.scale.as_of
    )
    _compare_table(database, "client_profiles", profiles, problems, limit)
    _compare_table(database, "metrics", metrics, problems, limit)
    counts = _dead_letters(database)
    want = expected.dead_letters + (sent_dead_letters or Counter())
    short = {node: (counts[node], n) for node, n in want.items() if counts[node] < n}
    over = {node: (n, want[node]) for node, n in counts.items() if n > want[node]}
    if short or (over and sent_dead_letters is not None):
        problems.append(
            f"dead letters per node (stored, expected): {dict(sorted({**short, **over}.items()))}"
        )
    return problems[:limit]


def _compare_table(
    database: ResultsDatabase,
    table: str,
    want: Mapping[Any, Mapping[str, Any]],
    problems: list[str],
    limit: int,
    *,
    subset: bool = False,
) -> dict[Any, dict[str, Any]]:
    """Note in ``problems`` how ``table`` differs from ``want`` (key -> row); with
    ``subset``, rows beyond ``want`` are fine. Returns the table's rows by key."""
    key, schema = SCHEMAS[table]
    got = {row[key]: row for row in database.rows(table)}
    missing = sorted(set(want) - set(got), key=str)
    extra = [] if subset else sorted(set(got) - set(want), key=str)
    if missing:
        problems.append(f"{table}: {len(missing)} rows missing, e.g. {key}={missing[:3]}")
    if extra:
        problems.append(f"{table}: {len(extra)} unexpected rows, e.g. {key}={extra[:3]}")
    for k in sorted(set(want) & set(got), key=str):
        for column in schema:
            a, b = got[k].get(column), want[k].get(column)
            if not _same(column, a, b):
                problems.append(f"{table} {key}={k}: {column} is {a!r}, expected {b!r}")
                if len(problems) >= limit:
                    return got
    return got


def _dead_letters(database: ResultsDatabase) -> Counter[str]:
    return Counter(row["node"] for row in database.rows(DEAD_LETTERS))


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
