"""The windowed workload of ``python -m bench``: the data, the rule, and every contender's
results against the plain reference, at a small size (the figures are not tested)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench import windowed_asyncpipe
from bench.__main__ import main
from bench.windowed import (
    START_S,
    Job,
    WindowedSpec,
    WindowRun,
    batched,
    compare,
    make_events,
    reference,
)
from bench.windowed_bytewax import aggregate_bytewax
from bench.windowed_workload import contenders

SMALL = WindowedSpec(events=5_000, keys=200, span_s=1_800)
#: More disorder than lateness: some events arrive after their window closed.
DISORDERLY = WindowedSpec(events=5_000, keys=50, span_s=600, disorder_s=20.0, seed=3)
W0 = START_S // 60  # the id of the first minute's window


def event(key: str, offset: float, value: int = 1) -> dict[str, object]:
    return {"key": key, "ts": START_S + offset, "value": value}


def test_events_are_seeded_and_never_older_than_the_disorder_allows() -> None:
    events = make_events(SMALL)
    assert events == make_events(SMALL)
    assert events != make_events(WindowedSpec(events=5_000, keys=200, span_s=1_800, seed=1))
    assert len(events) == 5_000 and len({e["key"] for e in events}) == 200
    assert all(1 <= e["value"] <= 100 for e in events)
    times = [e["ts"] for e in events]
    assert START_S <= min(times) and max(times) < START_S + 1_800
    latest = list(itertools.accumulate(times, max))
    older = [latest[i - 1] - ts for i, ts in enumerate(times) if i]
    assert 4.5 < max(older) <= SMALL.disorder_s


def test_reference_counts_events_of_closed_windows_as_late() -> None:
    events = [
        event("a", 10, 1),
        event("a", 66, 2),  # watermark 61: the first minute is closed
        event("b", 59, 3),  # late by the rule: left out
        event("a", 62, 4),
        event("b", 125, 5),  # watermark 120: the second minute's end, reached
        event("a", 119.999, 6),  # late
        event("b", 121, 7),
    ]
    run = reference(events, WindowedSpec())
    assert run.windows == {
        ("a", W0): (1, 1),
        ("a", W0 + 1): (2, 6),
        ("b", W0 + 2): (2, 12),
    }
    assert run.late == 2


def test_compare_names_wrong_missing_extra_and_twice_emitted_windows() -> None:
    expected = WindowRun({("a", 1): (1, 5), ("a", 2): (2, 3), ("b", 1): (1, 1)}, 0, 1.0)
    got = WindowRun.of([("a", 1, 1, 5), ("a", 2, 2, 4), ("c", 1, 1, 1), ("c", 1, 1, 1)], 1, 1.0)
    check = compare(expected, got)
    assert (check.wrong, check.missing, check.extra) == ([("a", 2)], [("b", 1)], [("c", 1)])
    assert check.duplicates == 1 and not check.ok
    assert check.summary() == "1 wrong, 1 missing, 1 extra, 1 late (reference 0), 1 emitted twice"
    assert compare(expected, expected).ok


@pytest.mark.parametrize("spec", [SMALL, DISORDERLY], ids=["in-order-enough", "late-events"])
@pytest.mark.parametrize("name", list(contenders()))
async def test_each_fast_contender_gives_the_reference_results(
    name: str, spec: WindowedSpec, tmp_path: Path
) -> None:
    events = make_events(spec)
    expected = reference(events, spec)
    assert (expected.late == 0) is (spec is SMALL)
    run = await contenders()[name](Job(batched(events, 100), spec, tmp_path, capacity=4))
    check = compare(expected, run)
    assert check.ok, check.summary()
    assert run.seconds > 0


def test_asyncpipe_contenders_are_the_judged_ones() -> None:
    assert set(windowed_asyncpipe.SIDES) <= {
        windowed_asyncpipe.IN_MEMORY,
        windowed_asyncpipe.DURABLE,
    }
    assert list(contenders())[0] == "hand-written asyncio"


def frozen_clock() -> datetime:
    return datetime(2030, 1, 1, tzinfo=UTC)


def test_bytewax_gives_the_reference_results_when_its_system_clock_stands_still() -> None:
    # Its watermarks then follow the event times alone: the dataflow computes what the
    # reference does, so the windows it gets wrong in the benchmark come from its clock.
    # (Its watermark is per key: with no more disorder than lateness, no event is late by
    # either rule. With more, the rules differ: DISORDERLY is not for Bytewax.)
    events = make_events(SMALL)
    check = compare(reference(events, SMALL), aggregate_bytewax(events, SMALL, 100, frozen_clock))
    assert check.ok, check.summary()


def test_bytewax_closes_windows_early_when_its_system_clock_runs_fast() -> None:
    # Each reading of the clock a minute later than the previous one, as if every batch
    # took a minute: windows close on wall time with events of them still to come.
    readings = itertools.count()

    def fast_clock() -> datetime:
        return datetime(2030, 1, 1, tzinfo=UTC) + timedelta(minutes=next(readings))

    events = make_events(SMALL)
    check = compare(reference(events, SMALL), aggregate_bytewax(events, SMALL, 100, fast_clock))
    assert check.late > 0 and check.missing and not check.ok


def test_windowed_workload_runs_and_reports(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--only", "windowed", "--events", "3000", "--keys", "50", "--bytewax-events", "500"]
    # Not --check: the targets are for the full size, not for 3,000 events.
    assert main([*argv, "--batch", "100", "--repeat", "2", "--no-uvloop"]) == 0
    out = capsys.readouterr().out
    assert "windowed aggregation: 3,000 events, 50 keys" in out
    assert "equal to the reference (2 runs)" in out
    assert "Bytewax 0.21" in out and "first 500" in out
    assert "plain loop (the reference)" in out


def test_check_fails_when_a_fast_contender_is_wrong(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def drops_the_last_batch(job: Job) -> WindowRun:
        events = [e for batch in job.batches[:-1] for e in batch]
        return reference(events, job.spec)

    monkeypatch.setitem(windowed_asyncpipe.SIDES, "drops the last batch", drops_the_last_batch)
    argv = ["--only", "windowed", "--events", "2000", "--keys", "20", "--bytewax-events", "0"]
    assert main([*argv, "--repeat", "1", "--no-uvloop", "--check"]) == 1
    out = capsys.readouterr().out
    assert "drops the last batch" in out and "missing" in out
    assert "Bytewax 0.21" not in out
