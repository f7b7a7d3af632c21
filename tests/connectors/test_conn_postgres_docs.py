"""Every ```python block of docs/postgres.md runs as pasted, on the test's PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "postgres.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)


def test_the_doc_has_examples() -> None:
    assert len(BLOCKS) == 2


@pytest.mark.parametrize("block", range(len(BLOCKS)))
async def test_a_python_block_runs(tmp_path: Path, pg_dsn: str, block: int) -> None:
    # This checkout's asyncpipe, whatever the environment has installed.
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, DATABASE_URL=pg_dsn, PYTHONPATH=path)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        BLOCKS[block],
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert out  # each example prints what it did
