"""The risk model: a scikit-learn decision tree flagging suspicious transactions.

Trained at start-up on a generated labelled set (deterministic from the seed).
:class:`RiskModel` carries the fitted tree as bytes and unpickles it once, in ``setup()``:
in the event loop's process by default, or in each worker of the process pool when the
node is ``cpu=True`` (the demo's ``--risk-in-pool``). A depth-6 tree predicts 200
transactions in ~10 µs once their features are built: the pool's round trip (pickling the
batch both ways, two helper threads, a process wake-up: 0.5 ms quiet, ~3 ms on a busy
host) costs far more than the work, so the demo runs it on the loop.
"""

from __future__ import annotations

import datetime
import logging
import os
import pickle
import random
from collections.abc import Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from .._handler import BaseHandler, reject
from ._domain import CATEGORIES, MAX_AMOUNT_BRL, amount_problem

__all__ = ["RiskModel", "features", "train", "trained"]

logger = logging.getLogger(__name__)

FEATURES = ("amount_brl", "weekday", "month", "currency", "category")
_CURRENCY_CODE = {"BRL": 0, "USD": 1, "EUR": 2}
_CATEGORY_CODE = {name: i for i, name in enumerate(CATEGORIES)}
_RISKY = frozenset({"Compras", "Transferências", "Lazer"})


def features(records: Sequence[Mapping[str, Any]]) -> list[list[float]]:
    """One row of :data:`FEATURES` per transaction (date as weekday and month)."""
    days = _DAYS
    rows = []
    for r in records:
        date = r["date"]
        day = days.get(date)
        if day is None:
            day = _day(date)
        rows.append(
            [
                r["amount_brl"],
                day[0],
                day[1],
                _CURRENCY_CODE.get(r["currency"], 3),
                _CATEGORY_CODE.get(r["category"], len(CATEGORIES)),
            ]
        )
    return rows


#: (weekday, month) of the dates seen (they repeat across records and batches): a date
#: is parsed once, not once per transaction. Bounded, whatever the data.
_DAYS: dict[str, tuple[int, int]] = {}
_KNOWN_DAYS = 4096


def _day(date: str) -> tuple[int, int]:
    parsed = datetime.date.fromisoformat(date)
    if len(_DAYS) >= _KNOWN_DAYS:
        _DAYS.clear()
    day = _DAYS[date] = (parsed.weekday(), parsed.month)
    return day


def _label(amount_brl: float, weekday: int, currency: int, category: str) -> int:
    """The rule the labelled set is drawn from (the tree has to learn it)."""
    if amount_brl > 2500 and category in _RISKY:
        return 1
    if weekday >= 5 and currency != 0 and amount_brl > 1000:
        return 1
    return 0


def train(seed: int, samples: int = 6000) -> bytes:
    """Fit the tree on ``samples`` generated labelled transactions; the pickled model."""
    from sklearn.tree import DecisionTreeClassifier

    rng = random.Random(f"{seed}-risk")
    x, y = [], []
    start = datetime.date(2025, 1, 1)
    currencies = list(_CURRENCY_CODE)
    for _ in range(samples):
        category = rng.choice(CATEGORIES)
        currency = rng.choice(currencies)
        amount = round(rng.expovariate(1 / 900) * (5.0 if currency != "BRL" else 1.0), 2)
        day = start + datetime.timedelta(days=rng.randrange(730))
        record = {"amount_brl": amount, "date": day.isoformat(), "currency": currency}
        [row] = features([{**record, "category": category}])
        label = _label(amount, day.weekday(), _CURRENCY_CODE[currency], category)
        if rng.random() < 0.01:
            label = 1 - label  # label noise
        x.append(row)
        y.append(label)
    model = DecisionTreeClassifier(max_depth=6, min_samples_leaf=10, random_state=seed)
    model.fit(x, y)
    return pickle.dumps(model)


def trained(directory: Path, seed: int) -> bytes:
    """:func:`train`'s model, kept in ``directory`` (the inputs') so that a restart of the
    demo does not fit it again (that costs seconds, mostly importing scikit-learn)."""
    path = directory / f"risk-model-{seed}-sklearn-{version('scikit-learn')}.pickle"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    model = train(seed)
    partial = path.with_suffix(".partial")
    partial.write_bytes(model)
    partial.replace(path)
    return model


class RiskModel(BaseHandler):
    """Sets ``suspicious`` (0/1) on each transaction of a batch. The model is unpickled
    once per process that runs it (each worker's, with ``cpu=True``), in ``setup()``.

    A transaction whose ``amount_brl`` is not a finite number within
    ``0..MAX_AMOUNT_BRL`` is dead-lettered, not predicted: the tree works in float32 and
    one value past its range (~3.4e38) would fail the whole batch. (The converter
    upstream already rejects those; this keeps the model safe wherever it is used.)"""

    def __init__(self, model: bytes) -> None:
        self.model_bytes = model
        self.model: Any = None

    async def setup(self) -> None:
        self.model = pickle.loads(self.model_bytes)  # our own bytes, not untrusted input
        logger.info("risk model loaded in process %d", os.getpid())

    def handle(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        fit = []
        for index, record in enumerate(batch):
            brl = record["amount_brl"]
            if type(brl) is float and 0.0 <= brl <= MAX_AMOUNT_BRL:  # the common case
                fit.append(record)
                continue
            problem = amount_problem(brl, "amount_brl", MAX_AMOUNT_BRL)
            if problem is None:
                fit.append(record)
            else:
                reject(record, problem, index=index)
        if not fit:
            return None
        for record, flag in zip(fit, self._flags(fit), strict=True):
            record["suspicious"] = flag
        return fit

    def predict(self, batch: list[dict[str, Any]]) -> list[int]:
        """The flags for ``batch`` (for the reference computation, in this process)."""
        if self.model is None:
            self.model = pickle.loads(self.model_bytes)  # our own bytes, not untrusted input
        return self._flags(batch) if batch else []

    def _flags(self, batch: Sequence[Mapping[str, Any]]) -> list[int]:
        """What ``self.model.predict`` answers, without its input checks (~0.2 ms a batch,
        20 times the tree's own work): the features as the float32 array it would make,
        the fitted tree's class probabilities, the likeliest class of each row."""
        rows = np.asarray(features(batch), dtype=np.float32)
        classes: list[int] = self.model.classes_.take(
            self.model.tree_.predict(rows).argmax(axis=1)
        ).tolist()
        return classes
