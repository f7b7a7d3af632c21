"""Every ``python`` block of docs/state.md runs as pasted, in a fresh directory, and
prints what its comments promise. Blocks that need PostgreSQL (``<!-- example:
needs=postgres -->``) run in ``tests/test_readme.py``, which gives them a database."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "state.md"
BLOCKS = re.findall(
    r"(?<!<!-- example: needs=postgres -->\n)```python\n(.*?)```", DOC.read_text(), flags=re.S
)


def test_the_page_has_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_block_runs_and_prints_what_it_says(index: int, tmp_path: Path) -> None:
    code = BLOCKS[index]
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    promised = re.findall(r"print\(.*\)  # (.*)", code)
    printed = done.stdout.strip().splitlines()
    assert len(printed) == len(promised)
    for line, comment in zip(printed, promised, strict=True):
        assert comment.startswith(line), (line, comment)
