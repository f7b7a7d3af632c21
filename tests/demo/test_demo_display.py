"""The demo's display: dead letters grouped by kind, the live table, the closing screen."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

from demo_helpers import AS_OF
from helptext import help_entries

from asyncpipe._metrics import NodeMetrics, PipelineMetrics
from asyncpipe.demo._live import Rates, grpc_line, live_table
from asyncpipe.demo._summary import group_dead_letters, template
from asyncpipe.ingest import MethodMetrics, ServerMetrics

SMALL_ARGS = ["--clients", "200", "--transactions", "1000", "--new", "400", "--as-of", AS_OF]


def test_reasons_differing_only_by_value_make_one_group_with_an_example() -> None:
    letters = [
        (
            "inbox_transactions",
            "Rejected",
            f"/in/new_{i}.txt:{i + 2}: column 'amount': cannot convert '{i},5' with float: "
            f"could not convert string to float: '{i},5'",
        )
        for i in range(60)
    ]
    letters.append(("normalize", "Rejected", "invalid CPF"))
    groups = group_dead_letters(letters)
    assert [(g.node, g.count, g.distinct) for g in groups] == [
        ("inbox_transactions", 60, 60),
        ("normalize", 1, 1),
    ]
    assert groups[0].example == (
        "column 'amount': cannot convert '0,5' with float: could not convert string to float: '0,5'"
    )


def test_groups_are_per_node_and_error_type() -> None:
    letters = [
        ("normalize", "Rejected", "invalid CPF"),
        ("scores", "Rejected", "invalid CPF"),
        ("scores", "ValueError", "invalid CPF"),
        ("scores", "Rejected", "invalid CPF"),
    ]
    groups = group_dead_letters(letters)
    assert [(g.node, g.error_type, g.count) for g in groups] == [
        ("scores", "Rejected", 2),
        ("normalize", "Rejected", 1),
        ("scores", "ValueError", 1),
    ]


def test_template_replaces_quoted_values_and_numbers_only() -> None:
    assert template("batch 3: expected 6 fields, got 5") == "expected … fields, got …"
    assert template("unknown currency 'ARS'") == "unknown currency …"
    assert template("invalid CPF in utf8") == "invalid CPF in utf8"


def node(name: str, **counts: int) -> NodeMetrics:
    fields: dict[str, Any] = dict.fromkeys(
        ("received", "emitted", "committed", "filtered", "errors", "retries"), 0
    ) | dict.fromkeys(("dead_letters", "skipped", "busy", "workers", "queue_high_water"), 0)
    fields |= {"queue_depth": 0, "queue_capacity": 128, **counts}
    return NodeMetrics(name=name, latency_p50=0.002, latency_p99=None, **fields)


def test_live_table_shows_sinks_committed_messages_and_rows_and_the_rate() -> None:
    metrics = PipelineMetrics(
        state="running",
        nodes={
            "convert": node("convert", received=10, emitted=9, dead_letters=7, queue_depth=3),
            "links": node("links", received=2, emitted=2),  # routing only: not shown
            "store_transactions": node("store_transactions", received=9, committed=8),
        },
        worker_restarts=0,
        uptime=2.0,
    )
    table = live_table(metrics, {"transactions": 8000, "dead_letters": 7})
    assert "8,000 rows stored, 7 dead letters (4,004 rows/s)" in str(table.title)
    cells = {column.header: list(column.cells) for column in table.columns}
    assert cells["node"] == ["convert", "store_transactions"]
    assert cells["msgs out"] == ["9", "8"]  # a sink's out: what it committed
    assert cells["rows"] == ["", "8,000"]
    assert cells["queue"] == ["3/128", "0/128"]
    assert "msgs: messages" in str(table.caption)


def method(name: str, requests: dict[str, int], items: int) -> MethodMetrics:
    return MethodMetrics(
        name=name,
        requests=requests,
        items_received=items,
        items_acknowledged=items,
        items_rejected=0,
        latency_count=sum(requests.values()),
        latency_sum=0.0,
        latency_buckets=(),
    )


def test_the_grpc_line_gives_requests_items_their_rates_and_errors_by_status() -> None:
    served = ServerMetrics(
        service="asyncpipe.demo.v1.IngestionService",
        methods={
            "IngestTransactions": method(
                "IngestTransactions", {"OK": 1200, "RESOURCE_EXHAUSTED": 3}, 240_000
            ),
            "IngestStream": method("IngestStream", {"OK": 40, "INVALID_ARGUMENT": 1}, 8_000),
        },
        calls_in_flight=0,
        serving=True,
    )
    line = grpc_line(served, (245.4, 49_080.0))
    assert line == (
        "gRPC: 1,244 requests (245/s), 248,000 items (49,080/s); "
        "errors: INVALID_ARGUMENT 1, RESOURCE_EXHAUSTED 3"
    )
    metrics = PipelineMetrics(state="running", nodes={}, worker_restarts=0, uptime=1.0)
    assert str(live_table(metrics, {}, line).title).endswith("\n" + line)
    idle = ServerMetrics(service="s", methods={}, calls_in_flight=0, serving=True)
    assert grpc_line(idle, (0.0, 0.0)).endswith("errors: none")


def test_rates_are_over_the_last_window_of_samples() -> None:
    rates = Rates(window=5.0)
    assert rates.update(0.0, 0, 0) == (0.0, 0.0)
    assert rates.update(2.0, 100, 1000) == (50.0, 500.0)  # since the first sample
    rates.update(6.0, 300, 3000)
    # At 12 s the samples of 0 s and 2 s are more than a window old; 6 s is the base.
    assert rates.update(12.0, 900, 9000) == (100.0, 1000.0)


async def test_the_run_writes_the_mermaid_file_and_ends_with_the_summary(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "asyncpipe.demo",
        "--workdir",
        str(tmp_path),
        *SMALL_ARGS,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 50)
    assert proc.returncode == 0, err.decode()
    mmd = tmp_path / "out" / "pipeline.mmd"
    assert mmd.read_text().startswith("flowchart LR")
    lines = out.decode().splitlines()
    assert not any("flowchart" in line or "-->" in line for line in lines)
    # Piped: the live table is printed once, nothing glued to its last line.
    assert lines.count("") >= 1 and not any(line.startswith("─") for line in lines[-20:])
    tail = "\n".join(lines[-8:])
    assert "pipeline" in tail and f"DAG {mmd}" in tail and lines[-1].startswith("classified")
    assert any(line.startswith("dead letters") for line in lines[-24:])


def test_help_gives_every_option_a_help_text_and_its_default() -> None:
    entries = help_entries("asyncpipe.demo")
    assert len(entries) == 21
    for entry in entries:
        assert "(default:" in entry, entry
    for option, default in [
        ("--workdir", "asyncpipe-demo"),
        ("--seed", "42"),
        ("--clients", "10000"),
        ("--rate", "BRL=1 USD=5 EUR=5.5"),
    ]:
        entry = next(e for e in entries if e.startswith(option))
        assert f"(default: {default})" in entry
