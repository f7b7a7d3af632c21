"""``python -m loadtest --help``: every option explained, with its default."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_help_gives_every_option_a_help_text_and_its_default() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "loadtest", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    options = done.stdout.split("options:", 1)[1]
    # One entry per option (-h aside): its name, then its help, ending in the default.
    entries = re.split(r"\n  (?=--)", options)[1:]
    assert len(entries) == 13
    for entry in entries:
        assert "(default:" in " ".join(entry.split()), entry
    for option, default in [
        ("--clients", "1,2,5,10,15,20"),
        ("--batch-size", "200"),
        ("--rpc", "unary"),
        ("--workdir", "a new temporary one"),
    ]:
        entry = next(e for e in entries if e.startswith(option))
        assert f"(default: {default}" in " ".join(entry.split())
