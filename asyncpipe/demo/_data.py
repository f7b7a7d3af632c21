"""The demo's input data: generated from a seed, deterministic, dirty on purpose.

Layout of the work directory::

    input/bank.db              clients and historical transactions (with category)
    input/params.json          what the inputs were generated from (reused if equal)
    input/new_categories.csv   the true category of every new transaction (for checks)
    inbox/new_transactions_N.txt   new transactions, ``|``-delimited, no category
    inbox/scores_N.csv         credit scores
    out/                       results.db, classified_transactions.csv, pipeline.mmd

Dirt: names and addresses with accents, odd case and spacing; about 1% of CPFs with a
wrong check digit; about 0.5% of transactions in an unknown currency; about 0.5% of inbox
lines malformed (a missing field, or an amount written ``12,50``), at least one per file.
"""

from __future__ import annotations

import csv
import datetime
import itertools
import json
import logging
import os
import random
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ._domain import CATEGORIES, KEYWORDS

__all__ = ["Scale", "generate", "inbox_path", "timer_batch"]

logger = logging.getLogger(__name__)

_VERSION = 3  # bump when the generator changes, so cached inputs are made again
_PLACES = ("CENTRO", "SAO PAULO", "RIO", "CURITIBA", "RECIFE", "NORTE", "SUL", "ONLINE")
_UNKNOWN_CURRENCIES = ("GBP", "JPY", "ARS")
_CATEGORY_WEIGHTS = (22, 14, 5, 6, 8, 8, 15, 12, 5, 5)  # in CATEGORIES order
_CUMULATIVE_WEIGHTS = list(itertools.accumulate(_CATEGORY_WEIGHTS))
TXT_FIELDS = ("id", "client_id", "date", "amount", "currency", "description")
SCORE_FIELDS = ("cpf", "score", "monthly_income", "credit_limit", "updated_at")
#: The typed columns of the inbox files (the rest stay text).
TXT_TYPES = {"id": int, "client_id": int, "amount": float}
SCORE_TYPES = {"score": int, "monthly_income": float, "credit_limit": float}
INBOX_TXT_FILES = 4
INBOX_CSV_FILES = 2
TIMER_RUNS = 5
TIMER_BATCH = 1000


@dataclass(frozen=True, slots=True)
class Scale:
    """What to generate."""

    seed: int = 42
    clients: int = 10_000
    transactions: int = 100_000  # historical, with category
    new: int = 20_000  # across the inbox's TXT files, without category
    as_of: str = datetime.date.today().isoformat()

    @property
    def first_timer_id(self) -> int:
        return self.transactions + self.new + 1


def inbox_path(workdir: Path) -> Path:
    return workdir / "inbox"


def generate(workdir: Path, scale: Scale) -> bool:
    """Write the inputs for ``scale`` under ``workdir``; returns False when the ones
    already there were made from the same parameters (and reuses them)."""
    params_path = workdir / "input" / "params.json"
    wanted = {"version": _VERSION, **asdict(scale)}
    try:
        if json.loads(params_path.read_text()) == wanted:
            return False
    except (OSError, ValueError):
        pass
    for sub in ("input", "inbox"):
        shutil.rmtree(workdir / sub, ignore_errors=True)
        (workdir / sub).mkdir(parents=True)
    _Generator(scale).write(workdir)
    params_path.write_text(json.dumps(wanted, indent=2) + "\n")
    return True


def timer_batch(scale: Scale, run: int) -> list[dict[str, Any]]:
    """The ``run``-th (from 0) batch of transactions the demo's timer adds."""
    rng = random.Random(f"{scale.seed}-timer-{run}")
    as_of = datetime.date.fromisoformat(scale.as_of)
    first = scale.first_timer_id + run * TIMER_BATCH
    rows = []
    for tx_id in range(first, first + TIMER_BATCH):
        row, _ = _transaction(rng, tx_id, scale.clients, as_of, days=30)
        row["category"] = None
        rows.append(row)
    return rows


class _Generator:
    def __init__(self, scale: Scale) -> None:
        from faker import Faker  # imported here: only generating needs it (and it is slow)

        self.scale = scale
        self.rng = random.Random(scale.seed)
        self.fake = Faker("pt_BR")
        self.fake.seed_instance(scale.seed)
        self.as_of = datetime.date.fromisoformat(scale.as_of)

    def write(self, workdir: Path) -> None:
        clients = list(self._clients())
        history = [self._historical(i) for i in range(1, self.scale.transactions + 1)]
        db = workdir / "input" / "bank.db"
        conn = sqlite3.connect(db)
        try:
            conn.execute(
                "CREATE TABLE clients (id INTEGER PRIMARY KEY, name TEXT, cpf TEXT, "
                "birth_date TEXT, address TEXT)"
            )
            conn.execute(
                "CREATE TABLE transactions (id INTEGER PRIMARY KEY, client_id INTEGER, "
                "date TEXT, amount REAL, currency TEXT, description TEXT, category TEXT)"
            )
            conn.executemany("INSERT INTO clients VALUES (?, ?, ?, ?, ?)", clients)
            conn.executemany("INSERT INTO transactions VALUES (?, ?, ?, ?, ?, ?, ?)", history)
            conn.commit()
        finally:
            conn.close()
        self._write_new_transactions(workdir)
        self._write_scores(workdir, clients)

    def _dirty(self, text: str) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.25:
            text = text.lower()
        elif roll < 0.35:
            text = text.upper()
        if rng.random() < 0.2:
            text = text.replace(" ", "  ", 1)
        if rng.random() < 0.1:
            text = f"  {text} "
        return text

    def _clients(self) -> Iterator[tuple[Any, ...]]:
        fake, rng = self.fake, self.rng
        for client_id in range(1, self.scale.clients + 1):
            cpf = fake.cpf()
            if rng.random() < 0.01:  # a wrong last check digit
                cpf = cpf[:-1] + str((int(cpf[-1]) + 1) % 10)
            birth = fake.date_of_birth(minimum_age=18, maximum_age=85).isoformat()
            # Composed from Faker's parts: the same pt_BR data as fake.name() and
            # fake.address(), at a tenth of the cost (their format parsing is slow).
            name = f"{fake.first_name()} {fake.last_name()}"
            if rng.random() < 0.4:
                name = f"{name} {fake.last_name()}"
            address = (
                f"{fake.street_name()}, {fake.building_number()}\n{fake.bairro()}\n"
                f"{fake.postcode()} {fake.city()} / {fake.estado_sigla()}"
            )
            yield (client_id, self._dirty(name), cpf, birth, self._dirty(address))

    def _historical(self, tx_id: int) -> tuple[Any, ...]:
        row, category = _transaction(self.rng, tx_id, self.scale.clients, self.as_of, 365)
        return (*row.values(), category)

    def _write_new_transactions(self, workdir: Path) -> None:
        scale, rng = self.scale, self.rng
        first = scale.transactions + 1
        ids = list(range(first, first + scale.new))
        truth: list[tuple[int, str]] = []
        per_file = -(-len(ids) // INBOX_TXT_FILES) if ids else 0
        for n in range(INBOX_TXT_FILES):
            chunk = ids[n * per_file : (n + 1) * per_file]
            lines = ["|".join(TXT_FIELDS)]
            for tx_id in chunk:
                row, category = _transaction(rng, tx_id, scale.clients, self.as_of, days=60)
                truth.append((tx_id, category))
                fields = [str(row[name]) for name in TXT_FIELDS]
                roll = rng.random()
                if roll < 0.0025 or tx_id == chunk[len(chunk) // 2]:  # one in every file
                    del fields[rng.randrange(len(fields))]  # a missing field
                elif roll < 0.005:
                    fields[3] = fields[3].replace(".", ",")  # 12,50: not a number here
                lines.append("|".join(fields))
            _write_then_rename(inbox_path(workdir) / f"new_transactions_{n + 1}.txt", lines)
        with open(workdir / "input" / "new_categories.csv", "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(("id", "category"))
            writer.writerows(truth)

    def _write_scores(self, workdir: Path, clients: list[tuple[Any, ...]]) -> None:
        rng = self.rng
        rows: list[list[str]] = []
        for client in clients:
            if rng.random() < 0.1:
                continue  # about 10% of clients have no score on file
            cpf = client[2]
            if rng.random() < 0.5:
                cpf = cpf.replace(".", "").replace("-", "")  # both spellings occur
            income = round(rng.uniform(1200, 20000), 2)
            updated = self.as_of - datetime.timedelta(days=rng.randint(0, 90))
            rows.append(
                [
                    cpf,
                    str(rng.randint(300, 900)),
                    f"{income:.2f}",
                    f"{income * rng.uniform(1, 4):.2f}",
                    updated.isoformat(),
                ]
            )
        per_file = -(-len(rows) // INBOX_CSV_FILES) if rows else 0
        for n in range(INBOX_CSV_FILES):
            lines = [",".join(SCORE_FIELDS)]
            chunk = rows[n * per_file : (n + 1) * per_file]
            for i, fields in enumerate(chunk):
                if rng.random() < 0.005 or i == len(chunk) // 2:  # at least one per file
                    fields = [*fields, "extra"]  # a malformed line: one field too many
                lines.append(",".join(fields))
            _write_then_rename(inbox_path(workdir) / f"scores_{n + 1}.csv", lines)


def _transaction(
    rng: random.Random, tx_id: int, clients: int, as_of: datetime.date, days: int
) -> tuple[dict[str, Any], str]:
    """One transaction (without its category) and its true category."""
    category = rng.choices(CATEGORIES, cum_weights=_CUMULATIVE_WEIGHTS)[0]
    keyword = rng.choice(KEYWORDS[category])
    description = f"{keyword} {rng.choice(_PLACES)}"
    if rng.random() < 0.2:
        description = description.lower()
    if category == "Salário":
        amount = round(rng.uniform(1500, 15000), 2)
    elif rng.random() < 0.05:
        amount = round(rng.uniform(1000, 8000), 2)
    else:
        amount = round(rng.uniform(5, 600), 2)
    roll = rng.random()
    if roll < 0.005:
        currency = rng.choice(_UNKNOWN_CURRENCIES)
    elif roll < 0.10:
        currency = "USD"
    elif roll < 0.15:
        currency = "EUR"
    else:
        currency = "BRL"
    date = as_of - datetime.timedelta(days=rng.randint(0, days))
    row = {
        "id": tx_id,
        "client_id": rng.randint(1, clients),
        "date": date.isoformat(),
        "amount": amount,
        "currency": currency,
        "description": description,
    }
    return row, category


def _write_then_rename(path: Path, lines: list[str]) -> None:
    """Write a whole file under a name the watcher ignores, then rename it into place."""
    temp = path.with_name(f".{path.name}.part")
    temp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(temp, path)
