"""Figures per level, the integrity check, and the outputs (table, JSON, CSV, PNG)."""

from __future__ import annotations

import csv
import json
import sqlite3
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from asyncpipe._metrics import percentile

from ._load import RUN_SPAN, Sample

__all__ = [
    "SEED_LABEL",
    "SEED_MEAN_RTT",
    "Integrity",
    "LevelResult",
    "chart",
    "chart_title",
    "check_integrity",
    "summarise",
    "write",
]

#: The original's published mean round trip (seconds) per number of clients.
SEED_MEAN_RTT = {1: 6.0, 2: 7.0, 5: 9.0, 10: 16.5, 15: 24.0, 20: 31.0}


@dataclass
class LevelResult:
    clients: int
    requests: int  # measured round trips (warm-up excluded)
    ok: int
    errors: dict[str, int]  # status -> count
    warmup_errors: dict[str, int]  # the same, during the warm-up (not measured)
    items_sent: int
    items_acknowledged: int
    seconds: float  # from the first measured send to the last reply
    items_per_second: float
    rtt_ms: dict[str, float | None]  # mean, p50, p95, p99, max over OK round trips
    server_ms: dict[str, float | None]  # processing_duration_seconds: mean, p50
    seed_mean_rtt_ms: float | None


def summarise(clients: int, samples: Sequence[Sample]) -> LevelResult:
    measured = [s for s in samples if not s.warmup]
    ok = [s for s in measured if s.status == "OK"]
    rtts = [s.rtt * 1000 for s in ok]
    server = [s.server_seconds * 1000 for s in ok]
    if measured:
        seconds = max(s.started + s.rtt for s in measured) - min(s.started for s in measured)
    else:
        seconds = 0.0
    acknowledged = sum(s.processed for s in ok)
    seed = SEED_MEAN_RTT.get(clients)

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return LevelResult(
        clients=clients,
        requests=len(measured),
        ok=len(ok),
        errors=dict(Counter(s.status for s in measured if s.status != "OK")),
        warmup_errors=dict(Counter(s.status for s in samples if s.warmup and s.status != "OK")),
        items_sent=sum(s.items for s in measured),
        items_acknowledged=acknowledged,
        seconds=round(seconds, 3),
        items_per_second=round(acknowledged / seconds, 1) if seconds > 0 else 0.0,
        rtt_ms={
            "mean": ms(statistics.fmean(rtts)) if rtts else None,
            "p50": ms(percentile(rtts, 0.50)),
            "p95": ms(percentile(rtts, 0.95)),
            "p99": ms(percentile(rtts, 0.99)),
            "max": ms(max(rtts)) if rtts else None,
        },
        server_ms={
            "mean": ms(statistics.fmean(server)) if server else None,
            "p50": ms(percentile(server, 0.50)),
        },
        seed_mean_rtt_ms=None if seed is None else seed * 1000,
    )


@dataclass
class Integrity:
    """Acknowledged items against the results database (``checked`` false: no database)."""

    checked: bool
    acknowledged: int = 0
    lost: int = 0  # acknowledged, not stored
    duplicated: int = 0  # stored more than once
    unacknowledged_stored: int = 0  # stored although no reply said so (a reply lost)
    database: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.checked or (self.lost == 0 and self.duplicated == 0)


def check_integrity(
    database: Path | None, samples: Sequence[Sample], run_base: int, *, drained: bool
) -> Integrity:
    """This run's acknowledged ids against the database. ``drained``: the server has
    stopped, so its aggregate is final and must count every stored transaction once."""
    if database is None:
        return Integrity(False, notes=["no results database given: integrity not checked"])
    acked: set[int] = set()
    for s in samples:
        if s.status == "OK":
            acked.update(range(s.first_id, s.first_id + s.processed))
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        stored = [
            row[0]
            for row in conn.execute(
                "SELECT id FROM transactions WHERE id >= ? AND id < ?",
                (run_base, run_base + RUN_SPAN),
            )
        ]
        all_rows = conn.execute("SELECT count(*) FROM transactions").fetchone()[0]
        counted = _aggregate_count(conn)
    finally:
        conn.close()
    counts = Counter(stored)
    present = set(counts)
    integrity = Integrity(
        True,
        acknowledged=len(acked),
        lost=len(acked - present),
        # The table's key makes a second row per id impossible; an item counted twice
        # would show in the pipeline's own aggregate instead.
        duplicated=sum(n - 1 for n in counts.values() if n > 1),
        unacknowledged_stored=len(present - acked),
        database=str(database),
    )
    if drained and counted is not None:
        integrity.duplicated += max(0, counted - all_rows)
        integrity.lost += max(0, all_rows - counted)
        integrity.notes.append(
            f"the pipeline's aggregate counted {counted:,} transactions; "
            f"{all_rows:,} rows are stored"
        )
    return integrity


def _aggregate_count(conn: sqlite3.Connection) -> int | None:
    """The demo aggregator's own count of the transactions it took (its ``metrics``)."""
    try:
        row = conn.execute("SELECT value FROM metrics WHERE name = 'transactions'").fetchone()
    except sqlite3.OperationalError:  # not the demo's database
        return None
    return None if row is None else int(json.loads(row[0]))


def table(levels: Sequence[LevelResult], integrity: Integrity, console: Console) -> None:
    out = Table(title="load test: round trip per 200-item batch, ms", title_justify="left")
    for column in (
        "clients",
        "requests",
        "errors",
        "items/s",
        "mean",
        "p50",
        "p95",
        "p99",
        "max",
        "server p50",
        "original mean",
    ):
        out.add_column(column, justify="right")

    def f(value: float | None) -> str:
        return "-" if value is None else f"{value:,.1f}"

    for level in levels:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(level.errors.items())) or "0"
        out.add_row(
            str(level.clients),
            f"{level.requests:,}",
            errors,
            f"{level.items_per_second:,.0f}",
            f(level.rtt_ms["mean"]),
            f(level.rtt_ms["p50"]),
            f(level.rtt_ms["p95"]),
            f(level.rtt_ms["p99"]),
            f(level.rtt_ms["max"]),
            f(level.server_ms["p50"]),
            f(level.seed_mean_rtt_ms),
        )
    console.print(out)
    if integrity.checked:
        style = "green" if integrity.ok else "bold red"
        console.print(
            f"[{style}]integrity: {integrity.acknowledged:,} items acknowledged; "
            f"lost {integrity.lost}, duplicated {integrity.duplicated}[/] "
            f"({integrity.unacknowledged_stored:,} stored without an acknowledgement)"
        )
    for note in integrity.notes:
        console.print(f"[yellow]{note}[/]")


def write(
    out: Path, config: dict[str, Any], levels: Sequence[LevelResult], integrity: Integrity
) -> list[Path]:
    """results.json, levels.csv and rtt.png in ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "config": config,
        "levels": [asdict(level) for level in levels],
        "integrity": {**asdict(integrity), "ok": integrity.ok},
    }
    json_path = out / "results.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    csv_path = out / "levels.csv"
    with open(csv_path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(
            [
                "clients",
                "requests",
                "ok",
                "errors",
                "items_acknowledged",
                "items_per_second",
                "rtt_mean_ms",
                "rtt_p50_ms",
                "rtt_p95_ms",
                "rtt_p99_ms",
                "rtt_max_ms",
                "server_mean_ms",
                "server_p50_ms",
                "seed_mean_rtt_ms",
            ]
        )
        for level in levels:
            writer.writerow(
                [
                    level.clients,
                    level.requests,
                    level.ok,
                    ";".join(f"{k}={v}" for k, v in sorted(level.errors.items())),
                    level.items_acknowledged,
                    level.items_per_second,
                    *level.rtt_ms.values(),
                    *level.server_ms.values(),
                    level.seed_mean_rtt_ms,
                ]
            )
    png_path = out / "rtt.png"
    chart(levels, png_path, title=chart_title(config))
    return [json_path, csv_path, png_path]


#: The original system's curve, named for what it is.
SEED_LABEL = "Gym Pipeline (original), mean RTT"


def chart_title(config: dict[str, Any]) -> str:
    """What was run: batch size, RPC kind, quick or full sweep and its seconds per level."""
    mode = "quick" if config.get("quick") else "full"
    return (
        f"asyncpipe load test: {config['batch_size']}-item batches, {config['rpc']} RPC, "
        f"{mode} sweep ({config['duration']:g} s measured per level)"
    )


def chart(levels: Sequence[LevelResult], path: Path, *, title: str) -> None:
    """RTT percentiles and items/s against clients, the original's means for reference."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt

    clients = [level.clients for level in levels]
    fig, (rtt, rate) = plt.subplots(1, 2, figsize=(11, 4.8))
    fig.suptitle(title)
    for key, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-")):
        values = [level.rtt_ms[key] for level in levels]
        points = [(c, v) for c, v in zip(clients, values, strict=True) if v is not None]
        if points:
            rtt.plot(*zip(*points, strict=True), style, label=f"asyncpipe {key}")
    seed = sorted(SEED_MEAN_RTT.items())
    rtt.plot([c for c, _ in seed], [s * 1000 for _, s in seed], "k--", label=SEED_LABEL)
    rtt.set_yscale("log")
    rtt.set_ylabel("round trip per batch (ms, log scale)")
    rtt.set_title("round trip")
    rtt.grid(True, which="both", alpha=0.3)
    rtt.legend(fontsize="small")
    rate.plot(clients, [level.items_per_second for level in levels], "o-", label="asyncpipe")
    rate.set_ylim(bottom=0)
    rate.set_ylabel("items acknowledged per second")
    rate.set_title("throughput (acknowledged after commit)")
    rate.grid(True, alpha=0.3)
    rate.legend(fontsize="small")
    for axes in (rtt, rate):
        # The levels tested, and only those: no 2.5 or 17.5 clients.
        axes.set_xticks(sorted({*clients, *(() if axes is rate else SEED_MEAN_RTT)}))
        axes.set_xlabel("concurrent clients")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
