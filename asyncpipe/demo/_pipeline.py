"""The demo's DAG (after the original's ``pipeline_flow.png``), wired from connectors and stages."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._executor import PipelineExecutor
from .._graph import HandlerNode
from ..connectors import (
    CsvSink,
    CsvSource,
    RequestTrigger,
    SqliteDeadLetterSink,
    SqliteSink,
    SqliteSource,
    TextSource,
    TimerTrigger,
)
from ._data import SCORE_TYPES, TIMER_RUNS, TXT_FIELDS, TXT_TYPES, Scale, inbox_path
from ._dedupe import DEDUPE_IDS
from ._domain import RATES
from ._model import RiskModel
from ._stages import (
    Aggregator,
    Classifier,
    CurrencyConverter,
    Normalizer,
    ScoreCheck,
    Select,
    TimerBatches,
)

__all__ = ["SCHEMAS", "DemoConfig", "build_pipeline", "reset_outputs"]

BATCH = 1000

#: The results database: table -> (key, column types).
SCHEMAS: dict[str, tuple[str, dict[str, str]]] = {
    "clients": (
        "id",
        {"id": "INTEGER", "name": "TEXT", "cpf": "TEXT", "birth_date": "TEXT", "address": "TEXT"},
    ),
    "scores": (
        "cpf",
        {
            "cpf": "TEXT",
            "score": "INTEGER",
            "monthly_income": "REAL",
            "credit_limit": "REAL",
            "updated_at": "TEXT",
        },
    ),
    "transactions": (
        "id",
        {
            "id": "INTEGER",
            "client_id": "INTEGER",
            "date": "TEXT",
            "amount": "REAL",
            "currency": "TEXT",
            "amount_brl": "REAL",
            "description": "TEXT",
            "category": "TEXT",
            "suspicious": "INTEGER",
        },
    ),
    "client_profiles": (
        "client_id",
        {
            "client_id": "INTEGER",
            "income_avg": "REAL",
            "balance": "REAL",
            "tx_30d": "INTEGER",
            "suspicious_share": "REAL",
            "new_score": "INTEGER",
            "risk_class": "TEXT",
            "loan_limit": "REAL",
        },
    ),
    "metrics": ("name", {"name": "TEXT", "value": "TEXT"}),
}


@dataclass
class DemoConfig:
    workdir: Path
    scale: Scale
    rates: Mapping[str, float] = field(default_factory=lambda: dict(RATES))
    serve: bool = False  # keep watching the inbox until stopped
    timer_interval: float = 0.2
    timer_runs: int = TIMER_RUNS
    max_workers: int | None = None
    #: Run the risk model in the process pool (``cpu=True``, ``max_workers`` processes)
    #: rather than on the event loop. Off by default: the tree's work per batch is far
    #: smaller than the pool's round trip (see ``_model``).
    risk_in_pool: bool = False
    #: Concurrent writes per table sink (``workers=``): the batches waiting for one table
    #: are committed together (see ``connectors._sqlite_db``), in arrival order, instead
    #: of each waiting for the one before it (at 20 gRPC clients a table sink with one
    #: worker was the pipeline's bottleneck, its input queue the only one not empty).
    sink_workers: int = 4
    #: Shuffle the order data arrives in (database rows, which source starts first):
    #: the results must not change. None: ids in order.
    arrival_seed: int | None = None
    #: How many distinct transaction ids the aggregator remembers to count a resent
    #: transaction once (bounded memory, see ``RecentIds``).
    dedupe_ids: int = DEDUPE_IDS

    @property
    def out(self) -> Path:
        return self.workdir / "out"

    @property
    def results(self) -> Path:
        return self.out / "results.db"

    @property
    def input_db(self) -> Path:
        return self.workdir / "input" / "bank.db"


def reset_outputs(config: DemoConfig, *, inputs_changed: bool = False) -> None:
    """Every run recomputes from all inputs: forget what the last run fed and wrote
    beside the upserted tables (inbox manifests, the classified file, dead letters); when
    the inputs were made anew (another seed or scale), the whole results database."""
    config.out.mkdir(parents=True, exist_ok=True)
    if inputs_changed:
        for suffix in ("", "-wal", "-shm"):
            (config.out / f"results.db{suffix}").unlink(missing_ok=True)
    for stale in [
        *config.out.glob(".inbox-manifest-*"),
        config.out / "classified_transactions.csv",
    ]:
        stale.unlink(missing_ok=True)
    if config.results.exists():
        conn = sqlite3.connect(config.results)
        try:
            conn.execute("DROP TABLE IF EXISTS dead_letters")
            conn.commit()
        finally:
            conn.close()


def _read_txt(path: Path) -> TextSource:
    return TextSource(
        path,
        BATCH,
        delimiter="|",
        header=True,
        types=TXT_TYPES,
        strip=True,
    )


def _read_scores(path: Path) -> CsvSource:
    return CsvSource(
        path,
        BATCH,
        types=SCORE_TYPES,
    )


def build_pipeline(
    config: DemoConfig,
    model: bytes,
    *,
    risk_model: type[RiskModel] = RiskModel,
    **executor_options: Any,
) -> PipelineExecutor:
    """The bank pipeline; its gRPC entry points are the nodes ``normalize``,
    ``classify`` and ``scores``."""
    inbox, out = inbox_path(config.workdir), config.out
    checks = None if config.serve else 1  # run once: the files there now, then stop

    def watch(suffix: str, reader: Any) -> RequestTrigger:
        return RequestTrigger(
            reader,
            suffix,
            inbox,
            poll_interval=0.5 if config.serve else 0.05,
            max_checks=checks,
            settle=0.5 if config.serve else 0.0,
            manifest=out / f".inbox-manifest-{suffix.lstrip('.')}.jsonl",
        )

    def store(name: str, table: str, upstream: HandlerNode, workers: int) -> HandlerNode:
        key, schema = SCHEMAS[table]
        sink = SqliteSink(config.results, table, key=key, schema=schema)
        return HandlerNode(name, sink, [upstream], workers=workers, ordered=False)

    order = "id"
    if config.arrival_seed is not None:  # a pseudo-random permutation of the ids
        order = f"(id * 2654435761 + {int(config.arrival_seed)}) % 4294967296"
    clients_db = HandlerNode(
        "clients_db",
        SqliteSource(config.input_db, f"SELECT * FROM clients ORDER BY {order}", batch_size=BATCH),
    )
    history_db = HandlerNode(
        "history_db",
        SqliteSource(
            config.input_db, f"SELECT * FROM transactions ORDER BY {order}", batch_size=BATCH
        ),
    )
    inbox_tx = HandlerNode("inbox_transactions", watch(".txt", _read_txt))
    inbox_scores = HandlerNode("inbox_scores", watch(".csv", _read_scores))
    timer = HandlerNode(
        "timer",
        TimerTrigger(TimerBatches(config.scale), config.timer_interval, config.timer_runs),
    )
    normalize = HandlerNode("normalize", Normalizer(), [clients_db])
    classify = HandlerNode("classify", Classifier(), [inbox_tx, timer])
    scores = HandlerNode("scores", ScoreCheck(), [inbox_scores])
    save = HandlerNode(
        "save_classified",
        CsvSink(out / "classified_transactions.csv", fieldnames=[*TXT_FIELDS, "category"]),
        [classify],
    )
    convert = HandlerNode("convert", CurrencyConverter(config.rates), [history_db, classify])
    risk = HandlerNode("risk", risk_model(model), [convert], cpu=config.risk_in_pool)
    aggregate = HandlerNode(
        "aggregate",
        Aggregator(config.scale.as_of, dedupe_ids=config.dedupe_ids),
        [normalize, scores, risk],
        capacity=256,
    )
    profiles = HandlerNode("profiles", Select("profiles"), [aggregate])
    metrics = HandlerNode("metrics", Select("metrics"), [aggregate])
    producers = [clients_db, history_db, inbox_tx, inbox_scores, timer]
    if config.arrival_seed is not None:
        random.Random(config.arrival_seed).shuffle(producers)  # which source starts first
    # A node sends to its dependents in the order they are listed here, and the first
    # one sent to runs first: each sink comes before its upstream's other dependents, so
    # that its write is on the database thread while the event loop does their work (the
    # aggregator's ~1 ms), not after it.
    consumers = [
        normalize,
        classify,
        scores,
        save,
        convert,
        risk,
        store("store_clients", "clients", normalize, config.sink_workers),
        store("store_scores", "scores", scores, config.sink_workers),
        store("store_transactions", "transactions", risk, config.sink_workers),
        aggregate,
        profiles,
        metrics,
        store("store_profiles", "client_profiles", profiles, config.sink_workers),
        store("store_metrics", "metrics", metrics, 1),  # ~1 message a second
    ]
    return PipelineExecutor(
        producers,
        consumers,
        dead_letter_sink=SqliteDeadLetterSink(config.results),
        max_workers=config.max_workers,
        **executor_options,
    )
