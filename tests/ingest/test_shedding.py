"""The load estimator, on a clock the test moves."""

from __future__ import annotations

import pytest

from asyncpipe.ingest._shedding import LoadEstimator


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_idle_server_that_has_learnt_nothing_refuses_nothing() -> None:
    load = LoadEstimator(clock=Clock())
    assert load.expected_wait() == 0.0
    assert load.refusal(0.0) is None


def test_before_anything_finished_a_burst_is_let_in_at_the_initial_pace() -> None:
    clock = Clock()
    load = LoadEstimator(initial=0.01, clock=clock)
    for _ in range(9):
        load.take()  # a burst at a cold server
    assert load.expected_wait() == pytest.approx(0.1)  # 10 batches x 10 ms
    assert load.refusal(0.05) is not None
    assert load.refusal(0.2) is None


def test_before_anything_finished_the_wait_is_the_time_the_line_has_stood_still() -> None:
    clock = Clock()
    load = LoadEstimator(initial=0.0, clock=clock)
    for _ in range(9):
        load.take()  # a burst at a cold server
    assert load.expected_wait() == 0.0
    clock.now += 0.1  # nothing has finished for 0.1 s: each batch takes at least that
    assert load.expected_wait() == pytest.approx(1.0)
    assert load.refusal(0.5) is not None
    assert load.refusal(2.0) is None


def test_a_stalled_pipeline_is_seen_before_its_batches_finish() -> None:
    clock = Clock()
    load = LoadEstimator(clock=clock)
    ticket = load.take()
    clock.now += 0.01
    load.finish(ticket)  # it was fast: 10 ms a batch
    load.take()
    clock.now += 0.5  # then the line stopped moving
    assert load.expected_wait() == pytest.approx(1.0)  # 2 x 0.5 s, not 2 x 10 ms


def test_a_lone_batch_teaches_the_time_of_one_batch() -> None:
    clock = Clock()
    load = LoadEstimator(clock=clock)
    ticket = load.take()
    clock.now += 0.2
    load.finish(ticket)
    assert load.per_batch == pytest.approx(0.2)
    assert load.expected_wait() == pytest.approx(0.2)  # nothing ahead
    assert load.refusal(0.25) is None
    assert load.refusal(0.15) == (
        "server overloaded: expected wait ~200 ms exceeds the 150 ms left before the "
        "deadline; send it again later or with a longer deadline"
    )
    assert load.refusal(None) is None  # no deadline: never refused


def test_the_wait_grows_with_the_batches_in_flight() -> None:
    clock = Clock()
    load = LoadEstimator(clock=clock)
    first = load.take()
    clock.now += 0.1
    load.finish(first)
    for _ in range(9):
        load.take()  # the line moved just now: the average alone counts
    assert load.in_flight == 9
    assert load.expected_wait() == pytest.approx(1.0)  # 9 ahead + itself, 0.1 s each
    assert load.refusal(0.5) is not None
    assert load.refusal(1.5) is None


def test_a_sample_is_divided_by_the_position_in_the_line() -> None:
    clock = Clock()
    load = LoadEstimator(weight=1.0, clock=clock)
    tickets = [load.take() for _ in range(4)]
    clock.now += 0.4  # the fourth waited 0.4 s behind three others: 0.1 s per batch
    for ticket in tickets[:3]:
        load.finish(ticket, measured=False)  # ended abnormally: not a sample
    assert load.per_batch is None
    load.finish(tickets[3])
    assert load.per_batch == pytest.approx(0.1)
    assert load.in_flight == 0


def test_the_average_moves_by_its_weight() -> None:
    clock = Clock()
    load = LoadEstimator(weight=0.5, clock=clock)
    for seconds in (0.2, 0.4):
        ticket = load.take()
        clock.now += seconds
        load.finish(ticket)
    assert load.per_batch == pytest.approx(0.3)


def test_the_weight_is_checked() -> None:
    with pytest.raises(ValueError, match="weight"):
        LoadEstimator(weight=0)
    with pytest.raises(ValueError, match="initial"):
        LoadEstimator(initial=-1)
