"""The options of a command's ``--help``, for the tests that every option is explained."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def help_entries(module: str) -> list[str]:
    """``python -m module --help``'s options (``-h`` aside), one entry each: its name and
    its help, with argparse's wrapping undone."""
    done = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    options = done.stdout.split("options:", 1)[1]
    entries = [" ".join(entry.split()) for entry in re.split(r"\n  (?=-)", options)[1:]]
    return [entry for entry in entries if not entry.startswith("-h")]
