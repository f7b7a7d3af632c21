"""The demo's DAG (after the original's ``pipeline_flow.png``), wired from connectors and stages."""

from __future__ import annotations

import json
import random
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
    SqliteSource,
    TextSource,
    TimerTrigger,
)
from ..ingest import IngestServer
from ._aggregate import (
    ClientProfiles,
    GlobalTotals,
    JoinScores,
    ProfileRows,
    Rows,
    client_key,
    is_client,
    is_link,
    is_score,
)
from ._data import SCORE_TYPES, TIMER_RUNS, TXT_FIELDS, TXT_TYPES, Scale, inbox_path
from ._database import ResultsDatabase, open_results
from ._domain import RATES
from ._fed import FedOnce
from ._model import RiskModel
from ._stages import Classifier, CurrencyConverter, Normalizer, ScoreCheck, TimerBatches
from .service import bank_server

__all__ = [
    "DEDUPE_TTL",
    "FED_ONCE",
    "SCHEMAS",
    "DemoConfig",
    "build_pipeline",
    "reset_outputs",
    "unfed",
]

BATCH = 1000
#: A day: a batch sent again (or an inbox file fed again after a crash) within a day of
#: its first application is recognised. The marks cost a row per message and stage.
DEDUPE_TTL = 24 * 3600.0

#: The sources fed once per work directory (see ``_fed``).
FED_ONCE = ("clients_db", "history_db", "timer")

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
    #: Seconds the stateful stages remember a message they applied, so that the same
    #: batch sent again (same batch id, the same inbox file) is not applied twice.
    dedupe_ttl: float = DEDUPE_TTL
    #: Where the results, dead letters and durable state live (``--database``):
    #: ``sqlite`` (``out/results.db`` and ``out/state.db``) or a ``postgresql://`` URL.
    database: str = "sqlite"
    #: The Dask scheduler the risk model runs on (``--dask``), instead of the event loop
    #: or the process pool. None: not on Dask.
    dask: str | None = None

    @property
    def results_db(self) -> ResultsDatabase:
        """The results database ``database`` names (see ``_database``)."""
        return open_results(self.database, self.out)

    #: Server processes sharing the port and the databases (``--processes``): above 1
    #: the state store runs in shared mode (docs/processes.md).
    processes: int = 1
    #: Run the start-up sources (the input database, the timer, the inbox watchers).
    #: With several server processes only the first one does; the others feed gRPC only.
    startup: bool = True

    @property
    def out(self) -> Path:
        return self.workdir / "out"

    @property
    def results(self) -> Path:
        """The SQLite results database (with ``database="sqlite"``)."""
        return self.out / "results.db"

    @property
    def state(self) -> Path:
        """The aggregator's durable state (SQLite)."""
        return self.out / "state.db"

    @property
    def input_db(self) -> Path:
        return self.workdir / "input" / "bank.db"


def reset_outputs(config: DemoConfig, *, inputs_changed: bool = False) -> None:
    """Prepare ``out/`` for a run.

    A run to completion recomputes everything from the inputs: it starts from an empty
    ``out/`` (results, state, inbox manifests, the classified file, the markers of fed
    sources). ``--serve`` resumes instead: what the work directory holds is kept (what
    earlier runs acknowledged is in the state and the results), unless the inputs were
    made anew (another seed, scale or as-of date).
    """
    config.out.mkdir(parents=True, exist_ok=True)
    if config.serve and not inputs_changed:
        return
    config.results_db.reset()
    for stale in [
        *config.out.glob(".inbox-manifest-*"),
        *config.out.glob(".fed-*"),
        config.out / "classified_transactions.csv",
    ]:
        stale.unlink(missing_ok=True)


def unfed(config: DemoConfig) -> list[str]:
    """The inputs not yet fed to the end in this work directory (a stop came first): the
    sources fed once without their marker, the inbox files not in their manifest."""
    left = [name for name in FED_ONCE if not (config.out / f".fed-{name}").exists()]
    for suffix in ("txt", "csv"):
        manifest = config.out / f".inbox-manifest-{suffix}.jsonl"
        try:
            lines = manifest.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        done = {json.loads(line)["file"] for line in lines if line.strip()}
        inbox = inbox_path(config.workdir)
        left.extend(
            str(path)
            for path in sorted(inbox.glob(f"*.{suffix}"))
            if path.name not in done and not path.name.startswith(".")
        )
    return left


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
    results = config.results_db
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
        sink = results.sink(table, key, schema)
        route = None if results.commits_in_order else key
        return HandlerNode(name, sink, [upstream], workers=workers, key=route, ordered=False)

    def fed_once(name: str, source: Any) -> HandlerNode:
        return start_up(name, FedOnce(source, name, out / f".fed-{name}"))

    def start_up(name: str, source: Any) -> HandlerNode:
        return HandlerNode(name, source if config.startup else [])  # [] feeds nothing

    order = "id"
    if config.arrival_seed is not None:  # a pseudo-random permutation of the ids
        order = f"(id * 2654435761 + {int(config.arrival_seed)}) % 4294967296"
    clients_db = fed_once(
        "clients_db",
        SqliteSource(config.input_db, f"SELECT * FROM clients ORDER BY {order}", batch_size=BATCH),
    )
    history_db = fed_once(
        "history_db",
        SqliteSource(
            config.input_db, f"SELECT * FROM transactions ORDER BY {order}", batch_size=BATCH
        ),
    )
    inbox_tx = start_up("inbox_transactions", watch(".txt", _read_txt))
    inbox_scores = start_up("inbox_scores", watch(".csv", _read_scores))
    timer = fed_once(
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
    risk = HandlerNode(
        "risk",
        risk_model(model),
        [convert],
        cpu=config.risk_in_pool,
        executor=_on_dask(config.dask),
    )
    # The aggregator: keyed stateful stages (see _aggregate), one lane each.
    join = HandlerNode("join", JoinScores(), [normalize, scores], key=_cpf)
    links = HandlerNode("links", Rows(is_link), [join])
    aggregate = HandlerNode(
        "aggregate", ClientProfiles(config.scale.as_of), [links, risk], key=client_key
    )
    totals = HandlerNode("totals", GlobalTotals(), [aggregate], key=_one_key)
    profiles = HandlerNode("profiles", ProfileRows(), [aggregate])
    client_rows = HandlerNode("client_rows", Rows(is_client), [join])
    score_rows = HandlerNode("score_rows", Rows(is_score), [join])
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
        store("store_transactions", "transactions", risk, config.sink_workers),
        join,
        links,
        aggregate,
        totals,
        profiles,
        client_rows,
        score_rows,
        store("store_clients", "clients", client_rows, config.sink_workers),
        store("store_scores", "scores", score_rows, config.sink_workers),
        store("store_profiles", "client_profiles", profiles, config.sink_workers),
        store("store_metrics", "metrics", totals, 1),  # one snapshot after another
    ]
    return PipelineExecutor(
        producers,
        consumers,
        dead_letter_sink=results.dead_letter_sink(),
        state_store=results.state_store(dedupe_ttl=config.dedupe_ttl, shared=config.processes > 1),
        max_workers=config.max_workers,
        **executor_options,
    )


def _on_dask(scheduler: str | None) -> Any:
    """The risk node's ``executor=``: the Dask scheduler's, or None (the loop or the
    pool). Imported only then: ``asyncpipe.dask`` needs the ``[dask]`` extra."""
    if scheduler is None:
        return None
    from ..dask import DaskExecutor

    return DaskExecutor(scheduler)


def _cpf(record: dict[str, Any]) -> str:
    return record["cpf"]  # type: ignore[no-any-return]


def _one_key(record: Any) -> int:
    return 0


def ingest_server(
    executor: PipelineExecutor, config: DemoConfig, *, host: str, port: int
) -> IngestServer:
    """The gRPC service in front of :func:`build_pipeline`'s pipeline: its entry nodes,
    and the currencies the converter knows (``--rate`` included)."""
    return bank_server(
        executor,
        clients="normalize",
        transactions="classify",
        scores="scores",
        currencies=config.rates,
        host=host,
        port=port,
    )
