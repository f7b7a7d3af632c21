"""The user-facing examples in demo/ run and print what their docstrings promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "demo"


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("embed_in_app.py", "[(1, 19.8), (3, 120.0)]"),
        ("custom_handler.py", "[{'A': 134, 'B': 133, 'C': 133}]"),
    ],
)
def test_example_runs(script: str, expected: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        timeout=50,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == expected
