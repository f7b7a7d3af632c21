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

The estimate learns from finished batches only: before the first one it refuses nothing.
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
    average; ``clock`` returns seconds (``time.monotonic`` by default)."""

    def __init__(self, *, weight: float = 0.2, clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < weight <= 1:
            raise ValueError(f"weight must be within (0, 1], got {weight}")
        self.weight = weight
        self.clock = clock
        #: Batches taken and not finished.
        self.in_flight = 0
        #: The moving average of seconds per batch (None until a batch has finished).
        self.per_batch: float | None = None

    def __repr__(self) -> str:
        per_batch = "?" if self.per_batch is None else f"{self.per_batch * 1000:.1f}ms"
        return f"<LoadEstimator in_flight={self.in_flight} per_batch={per_batch}>"

    def expected_wait(self) -> float:
        """Seconds a batch taken now is expected to take (0 until something finished)."""
        if self.per_batch is None:
            return 0.0
        return (self.in_flight + 1) * self.per_batch

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
        self.in_flight += 1
        return Ticket(self.clock(), self.in_flight)

    def finish(self, ticket: Ticket, *, measured: bool = True) -> None:
        """The batch of ``ticket`` is done; ``measured`` False for one that ended
        abnormally (its time says nothing about the pipeline's pace)."""
        self.in_flight -= 1
        if not measured:
            return
        sample = max(0.0, self.clock() - ticket.started) / ticket.position
        if self.per_batch is None:
            self.per_batch = sample
        else:
            self.per_batch += self.weight * (sample - self.per_batch)
