"""``python -m bench``: run from the repository, every option shown with its default, and
the engine workloads run end to end at a tiny size (the figures themselves are not tested)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helptext import help_entries

from bench.__main__ import main, parse_args

ROOT = Path(__file__).resolve().parents[2]


def test_help_lists_every_option_with_its_default() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for option, default in [
        ("--items", "200000"),
        ("--repeat", "5"),
        ("--rows", "1000000"),
        ("--events", "1000000"),
        ("--bytewax-events", "100000"),
    ]:
        assert option in done.stdout
        assert f"(default: {default})" in done.stdout
    assert "python -m bench.ingest" in done.stdout


def test_no_only_runs_every_workload_and_quick_caps_the_sizes() -> None:
    args = parse_args(["--quick"])
    assert args.only == ["per-item", "batched", "cpu", "csv", "postgres", "windowed", "dask"]
    assert (args.items, args.repeat, args.rows) == (20_000, 1, 100_000)
    assert (args.events, args.bytewax_events) == (100_000, 5_000)
    assert parse_args(["--only", "csv", "--only", "cpu"]).only == ["csv", "cpu"]


def test_chains_run_and_report(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--only", "per-item", "--only", "batched", "--items", "2000", "--batch", "100"]
    assert main([*argv, "--repeat", "1", "--min-seconds", "0.001", "--no-uvloop"]) == 0
    out = capsys.readouterr().out
    assert "per-item (1 item/msg)" in out and "batched (100 items/msg)" in out


def test_cpu_workers_find_the_handler_in_the_repository(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # bench is not installed: the pool's worker processes import bench.cpu by reference
    # from the repository, as they do under ``python -m bench``.
    argv = ["--only", "cpu", "--cpu-messages", "2", "--cpu-ms", "1", "--no-raw-cpu"]
    assert main([*argv, "--repeat", "1"]) == 0
    assert "cpu=True stage" in capsys.readouterr().out


def test_ingest_help_lists_every_option_with_its_default() -> None:
    entries = help_entries("bench.ingest")
    assert len(entries) == 10
    for entry in entries:
        assert "(default:" in entry, entry


def test_timeline_help_lists_every_option_with_its_default() -> None:
    entries = help_entries("bench.timeline")
    assert len(entries) == 6
    for entry in entries:
        assert "(default:" in entry, entry


@pytest.mark.timeout(240)  # the demo's start-up: data, model, pipeline
def test_the_timeline_follows_a_lone_batch_through_every_stage() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.timeline", "--batches", "10"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    probes = [line.split()[0] for line in done.stdout.splitlines() if line[:1].isalpha()]
    stages = ["decode>", "intake.convert<", "classify>", "convert>", "risk>"]
    stages += ["store_transactions>", "aggregate.apply>", "aggregate.commit<", "profiles>"]
    stages += ["store_profiles<", "receipt.resolved", "encode<"]
    assert [p for p in probes if p in stages] == stages  # each seen, in the batch's order
    # The stateful nodes' probes: their lanes' apply, the state store's calls and thread.
    assert {"aggregate.seen>", "totals.apply<", "totals.commit<", "state.thread<"} <= set(probes)
    assert "9 lone batches" in done.stdout  # the first tenth warms up


def test_loop_cpu_help_lists_every_option_with_its_default() -> None:
    entries = help_entries("bench.loop_cpu")
    assert len(entries) == 3
    for entry in entries:
        assert "(default:" in entry, entry


@pytest.mark.timeout(240)  # the demo's start-up: data, model, pipeline
def test_loop_cpu_feeds_the_demo_pipeline_and_reports_cpu_per_batch() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.loop_cpu", "--batches", "6", "--concurrency", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    assert "2 submitter(s), 6 batches: loop CPU " in done.stdout
    assert "passes/batch" in done.stdout


def test_dask_sweep_runs_on_a_local_cluster_and_reports_the_break_even(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # bench.cpu's handler reaches the Dask workers by reference, from the repository.
    argv = ["--only", "dask", "--dask-ms", "0.5,2", "--repeat", "1", "--no-uvloop"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "0.5 ms per message" in out and "2 ms per message" in out
    assert "Dask breaks even with the plain loop" in out
    assert "; with the process pool " in out


def test_dask_sizes_must_be_positive_numbers() -> None:
    for bad in ("0", "x,1"):
        with pytest.raises(SystemExit):
            parse_args(["--dask-ms", bad])
