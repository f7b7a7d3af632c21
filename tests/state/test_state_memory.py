"""Memory stays bounded: distinct keys through a keyed node over an SQLite store, with
messages that each leave a mark, keep the process's resident memory flat -- state lives
in the store, the cache holds ``cache_size`` keys, marks are not kept in memory.

Always run: 200,000 keys with a 2,000-key cache; the process may grow by at most 8 MiB
from when a tenth of the keys are in to the end (a cache that kept every key grows by
~20 MiB here). ``pytest -m soak``: 1,000,000 keys with the default 10,000-key cache,
resident memory under 150 MiB at the end and at most 16 MiB of growth (measured: ~40 MiB
resident, no growth).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = Path(__file__).parent / "memory_child.py"


def resident(keys: int, cache: int, tmp_path: Path) -> tuple[int, int]:
    """(KiB early, KiB at the end) of the child run over ``keys`` distinct keys."""
    done = subprocess.run(
        [sys.executable, str(CHILD), str(keys), str(tmp_path / "state.db"), str(cache)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = dict(line.split() for line in done.stdout.splitlines())
    return int(figures["early"]), int(figures["end"])


@pytest.mark.timeout(120)
def test_200k_distinct_keys_keep_memory_flat(tmp_path: Path) -> None:
    early, end = resident(200_000, 2_000, tmp_path)
    assert end - early < 8 * 1024, f"grew from {early} KiB to {end} KiB"


@pytest.mark.soak
@pytest.mark.timeout(900)
def test_a_million_distinct_keys_stay_under_150_mib(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if "soak" not in (request.config.getoption("-m") or ""):
        pytest.skip("a long soak: run it with pytest -m soak")
    early, end = resident(1_000_000, 10_000, tmp_path)
    assert end < 150 * 1024, f"{end} KiB at the end"
    assert end - early < 16 * 1024, f"grew from {early} KiB to {end} KiB"
