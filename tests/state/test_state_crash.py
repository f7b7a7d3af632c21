"""Crash recovery: a keyed, windowed pipeline SIGKILLed at random points and restarted,
its clients resending what was not acknowledged, ends with the state and every output of
a sequential model -- each input counted once.

The child (``crash_child.py``) runs the pipeline with its state, results and dead letters
in one SQLite file. This test plays the clients' memory: it records the acknowledgements
the child prints, kills it after a random number of them (or as soon as it is ready),
and starts it again to resend the rest. The plan has late and out-of-order records,
batches sent twice (a client retrying after success), empty batches, gaps in time (windows
that never open), a key seen once; windows span restarts.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from windows_model import TumblingModel

CHILD = Path(__file__).parent / "crash_child.py"
WINDOW, LATENESS = 10, 3
KILLS = 11  # per seed; two seeds: 22 kill points per run


def make_plan(rng: random.Random) -> list[tuple[str, list[dict[str, Any]]]]:
    plan: list[tuple[str, list[dict[str, Any]]]] = []
    t = 0.0
    for b in range(70):
        if rng.random() < 0.1:
            t += 35  # a gap: windows with no records at all
        records = []
        for _ in range(rng.choice([0, 1, 5, 12, 20])):  # some batches are empty
            t += rng.uniform(0, 0.6)
            disorder = rng.choice([0, 0, 0, rng.uniform(0, 2), rng.uniform(0, 9)])  # 9 > lateness
            records.append(
                {"k": f"k{rng.randrange(7)}", "t": round(t - disorder, 3), "v": rng.randrange(10)}
            )
        if b == 33:
            records.append({"k": "once", "t": round(t, 3), "v": 5})
        plan.append((f"batch-{b}", records))
        if plan and rng.random() < 0.12:  # a client sends an earlier batch again
            plan.append(plan[rng.randrange(len(plan))])
    return plan


def model_of(plan: list[tuple[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    windows = TumblingModel(size=WINDOW, lateness=LATENESS)
    counts: dict[str, int] = {}
    late: set[tuple[str, int]] = set()
    seen: set[str] = set()
    for batch_id, records in plan:
        if batch_id in seen:
            continue  # a duplicate: counted once
        seen.add(batch_id)
        before = len(windows.late)
        windows.feed(records)
        late.update((batch_id, records.index(r)) for r in windows.late[before:])
        for record in records:
            counts[record["k"]] = counts.get(record["k"], 0) + 1
    return {
        "windows": windows.all_windows(),
        "open": {(k, w): tuple(acc) for (k, w), acc in windows.open.items()},
        "counts": counts,
        "late": late,
    }


def run_child(folder: Path, kill_after: int | None, acked: set[int]) -> bool:
    """Run the child until it is done (True) or killed after ``kill_after`` acks."""
    (folder / "acked").write_text("".join(f"{p}\n" for p in sorted(acked)))
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(folder)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert child.stdout is not None
    seen = 0
    try:
        for line in child.stdout:
            word, *rest = line.split()
            if word == "ack":
                acked.add(int(rest[0]))
                seen += 1
            if kill_after is not None and seen >= kill_after and word in ("ready", "ack"):
                child.send_signal(signal.SIGKILL)
                child.wait(timeout=30)
                return False
            if word == "done":
                break
        assert child.wait(timeout=60) == 0
        return True
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()


def stored(db: Path) -> dict[str, Any]:
    with sqlite3.connect(db) as conn:
        windows = {
            (k, start): (n, total)
            for k, start, n, total in conn.execute("SELECT key, start, n, sum FROM windows")
        }
        counts: dict[str, list[int]] = {}
        for k, seq in conn.execute("SELECT k, seq FROM counts ORDER BY k, seq"):
            counts.setdefault(k, []).append(seq)
        late = {
            (origin, index)
            for origin, index in conn.execute(
                "SELECT origin, item_index FROM dead_letters WHERE error_message LIKE 'late by%'"
            )
        }
        letters = conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
        state = {
            ns: {pickle.loads(key): pickle.loads(value) for key, value in rows}
            for ns in ("win", "counter")
            for rows in [conn.execute("SELECT key, value FROM asyncpipe_state WHERE ns = ?", (ns,))]
        }
    return {"windows": windows, "counts": counts, "late": late, "letters": letters, "state": state}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_at_random_points_then_resend_equals_a_sequential_run(
    seed: int, tmp_path: Path
) -> None:
    rng = random.Random(seed)
    plan = make_plan(rng)
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    acked: set[int] = set()
    kills = 0
    while True:
        kill_after = rng.choice([0, 1, 2, 3, 5, 8]) if kills < KILLS else None
        if run_child(tmp_path, kill_after, acked):
            break
        kills += 1
    assert kills == KILLS
    assert acked == set(range(len(plan)))

    want = model_of(plan)
    got = stored(tmp_path / "results.db")
    assert got["windows"] == want["windows"]
    assert got["counts"] == {k: list(range(1, n + 1)) for k, n in want["counts"].items()}
    assert got["late"] == want["late"] and want["late"]
    assert got["letters"] == len(want["late"])  # no dead letter twice, none other
    assert got["state"]["counter"] == want["counts"]
    windows_state = {
        (k, w): tuple(acc) for k, wins in got["state"]["win"].items() for w, acc in wins
    }
    assert windows_state == want["open"]
    assert want["counts"]["once"] == 1
