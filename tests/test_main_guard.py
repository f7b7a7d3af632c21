"""A script that starts a pipeline with ``cpu=True`` nodes but lacks the main-module guard
fails once, saying how to fix it, instead of running its body in every worker."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

UNGUARDED = """
import logging
import multiprocessing

from asyncpipe import HandlerNode, PipelineExecutor

logging.basicConfig(level=logging.INFO)


def double(items):
    return [x * 2 for x in items]


src = HandlerNode("src", [[1, 2, 3]])
node = HandlerNode("double", double, ["src"], cpu=True)
context = multiprocessing.get_context(CONTEXT)
executor = PipelineExecutor([src], [node], max_workers=2, mp_context=context)
executor.start()
logging.info("finished, dead letters: %d", len(executor.dead_letters))
"""


@pytest.mark.parametrize("context", ["forkserver", "spawn"])
def test_script_without_main_guard_fails_once_showing_the_guard(
    tmp_path: Path, context: str
) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(UNGUARDED).replace("CONTEXT", repr(context)))
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert output.count('if __name__ == "__main__":') == 1, output
    assert "dead" not in output, output
    assert "finished" not in output, output
    assert "leaked semaphore" not in output, output
    assert "bootstrapping phase" not in output, output
