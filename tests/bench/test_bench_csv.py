"""The CSV -> SQLite workload of ``python -m bench``: every side stores every row."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bench import csv_sqlite


@pytest.mark.parametrize("side", list(csv_sqlite.SIDES))
def test_each_side_upserts_every_row_and_reports_its_memory(tmp_path: Path, side: str) -> None:
    csv_path, db = tmp_path / "t.csv", tmp_path / "t.db"
    csv_sqlite.write_csv(csv_path, 1234)
    run = csv_sqlite.SIDES[side](str(csv_path), str(db), 100, False)
    assert run.rows == 1234 and run.seconds > 0
    assert run.peak_kb >= run.start_kb > 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT sum(id), typeof(amount) FROM tx").fetchone() == (
            sum(range(1234)),
            "real",
        )
    conn.close()
