"""``python -m bench.demo_aggregate`` runs end to end at a tiny size, over both stores (the
figures themselves are not tested)."""

from __future__ import annotations

import pytest

from bench.demo_aggregate import main


def test_the_demo_aggregator_benchmark_runs_over_both_stores(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--batches", "4", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    for side in ("memory", "sqlite"):
        line = next(line for line in out.splitlines() if line.strip().startswith(side))
        assert "lone wall" in line and "20 in flight CPU" in line
