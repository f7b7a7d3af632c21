"""``python -m loadtest --help``: every option explained, with its default."""

from __future__ import annotations

from pathlib import Path

from helptext import help_entries

ROOT = Path(__file__).resolve().parents[2]


def test_help_gives_every_option_a_help_text_and_its_default() -> None:
    entries = help_entries("loadtest")
    assert len(entries) == 14
    for entry in entries:
        assert "(default:" in entry, entry
    for option, default in [
        ("--clients", "1,2,5,10,15,20"),
        ("--batch-size", "200"),
        ("--rpc", "unary"),
        ("--workdir", "a new temporary one"),
    ]:
        entry = next(e for e in entries if e.startswith(option))
        assert f"(default: {default}" in " ".join(entry.split())
