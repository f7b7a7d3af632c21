"""Load shedding: refuse at once a batch that cannot be answered before its deadline.

Under overload every call used to wait until its deadline and fail
``DEADLINE_EXCEEDED``, after taking a slot (and often its batch) for nothing. The
:class:`LoadEstimator` predicts how long a batch taken now would take to be answered:

    expected = (batches in flight + 1) x seconds per batch

where *seconds per batch* is an exponentially weighted moving average of each finished
batch's time in the server divided by its position in the line when it arrived (how many
batches were in flight, itself included). A lone batch so teaches the time of one batch;
under load the samples approach the pipeline's time between two answers (1 / throughput),
so the estimate is the wait behind the line. A call whose remaining deadline is shorter
than the estimate is refused ``RESOURCE_EXHAUSTED`` with both figures, nothing taken.

The average learns only when batches finish, which is too late in two cases: a burst
arriving at a cold server (200 callers at once: nothing has finished yet), and a pipeline
that has stalled. So until the first batch has finished, *seconds per batch* is taken to
be ``initial`` (10 ms by default: a burst is let in only as deep as its deadlines allow at
that pace, and the first answer corrects it), and it is never taken below the time the
line has stood still -- since the last batch finished, or since work arrived at an idle
server.
In steady state that gap is shorter than the average and changes nothing; for a pipeline
running many batches concurrently it may overstate the wait of a short deadline early
in a burst, which is the side to err on (the caller is told at once, and retries).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["LoadEstimator", "Ticket"]


class Ticket(NamedTuple):
    """A batch taken: when, and its position in the line."""

    started: float
    position: int


class LoadEstimator:
    """See the module docstring. ``weight`` is the share of the newest sample in the
    average; ``initial`` the seconds per batch assumed before any has finished; ``clock``
    returns seconds (``time.monotonic`` by default)."""

    def __init__(
        self,
        *,
        weight: float = 0.2,
        initial: float = 0.01,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < weight <= 1:
            raise ValueError(f"weight must be within (0, 1], got {weight}")
        if initial < 0:
            raise ValueError(f"initial must be >= 0, got {initial}")
        self.weight = weight
        self.initial = initial
        self.clock = clock
        #: Batches taken and not finished.
        self.in_flight = 0
        #: The moving average of seconds per batch (None until a batch has finished).
        self.per_batch: float | None = None
        # When the line last moved: a batch finished, or one arrived at an empty line.
        self._moved = 0.0

    def __repr__(self) -> str:
        per_batch = "?" if self.per_batch is None else f"{self.per_batch * 1000:.1f}ms"
        return f"<LoadEstimator in_flight={self.in_flight} per_batch={per_batch}>"

    def expected_wait(self) -> float:
        """Seconds a batch taken now is expected to take (see the module docstring)."""
        if not self.in_flight:
            return self.per_batch or 0.0  # an idle server: one batch's time
        per_batch = self.initial if self.per_batch is None else self.per_batch
        per_batch = max(per_batch, self.clock() - self._moved)
        return (self.in_flight + 1) * per_batch

    def refusal(self, remaining: float | None) -> str | None:
        """Why a batch with ``remaining`` seconds before its deadline should be refused,
        or None to take it (always None without a deadline)."""
        if remaining is None:
            return None
        expected = self.expected_wait()
        if expected <= remaining:
            return None
        return (
            f"server overloaded: expected wait ~{expected * 1000:.0f} ms exceeds the "
            f"{max(0.0, remaining) * 1000:.0f} ms left before the deadline; send it again "
            "later or with a longer deadline"
        )

    def take(self) -> Ticket:
        """A batch enters the line."""
        now = self.clock()
        if not self.in_flight:
            self._moved = now
        self.in_flight += 1
        return Ticket(now, self.in_flight)

    def finish(self, ticket: Ticket, *, measured: bool = True) -> None:
        """The batch of ``ticket`` is done; ``measured`` False for one that ended
        abnormally (its time says nothing about the pipeline's pace)."""
        now = self.clock()
        self.in_flight -= 1
        self._moved = now
        if not measured:
            return
        sample = max(0.0, now - ticket.started) / ticket.position
        if self.per_batch is None:
            self.per_batch = sample
        else:
            self.per_batch += self.weight * (sample - self.per_batch)
