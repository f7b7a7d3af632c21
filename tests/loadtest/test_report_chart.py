"""The load test's chart says what was run and names the original system's curve."""

from __future__ import annotations

from pathlib import Path

from loadtest._report import SEED_LABEL, chart_title, summarise, write


def test_title_gives_batch_size_rpc_kind_and_mode() -> None:
    config = {"batch_size": 50, "rpc": "stream", "quick": True, "duration": 1.5}
    assert chart_title(config) == (
        "asyncpipe load test: 50-item batches, stream RPC, quick sweep (1.5 s measured per level)"
    )
    assert "full sweep (10 s" in chart_title({**config, "quick": False, "duration": 10.0})
    assert SEED_LABEL == "Gym Pipeline (original), mean RTT"


def test_write_draws_the_chart_even_without_samples(tmp_path: Path) -> None:
    from loadtest._report import Integrity

    config = {"batch_size": 200, "rpc": "unary", "quick": False, "duration": 10.0}
    paths = write(tmp_path, config, [summarise(1, []), summarise(2, [])], Integrity(False))
    assert paths[-1].read_bytes().startswith(b"\x89PNG")
