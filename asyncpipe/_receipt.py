"""Receipts: knowing when everything derived from a submitted message is done.

Every message submitted from outside carries a :class:`Receipt`. The receipt keeps a count
of derived messages still in flight: a node that turns one message into ``k`` outputs for
``d`` downstream nodes adds ``k * d`` before it releases the one it consumed, so the count
can only reach zero when every descendant has reached a terminal point. The runtime is
single-threaded (one event loop), so plain integer arithmetic is enough.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, NamedTuple

from ._errors import PipelineAborted

if TYPE_CHECKING:
    from ._deadletter import DeadLetter

__all__ = ["Outcome", "Receipt", "Tracked"]

_ids = itertools.count(1)


class Outcome(enum.StrEnum):
    """Where a message's journey ended."""

    COMMITTED = "committed"  #: handled by a terminal node (a sink) without error
    FILTERED = "filtered"  #: a handler returned None (or a generator yielded nothing)
    DEAD_LETTERED = "dead_lettered"  #: failed after its retries, or rejected by a handler
    SKIPPED = "skipped"  #: failed under the ``on_error="skip"`` policy
    #: taken into a stateful node's committed state (a keyed aggregate, a window): what it
    #: contributes is emitted later, under the receipt of the message that closes it
    ABSORBED = "absorbed"


def item_count(payload: Any) -> int:
    """How many items a message holds: its length for a list or tuple, else 1."""
    return len(payload) if isinstance(payload, list | tuple) else 1


class Receipt:
    """Awaitable record of one submitted message and everything derived from it.

    ``await receipt`` (or ``await receipt.wait(timeout)``) returns the receipt itself once
    every derived message has reached a terminal point; then :attr:`counts` gives terminal
    events per :class:`Outcome` and :attr:`items` the items they held (the length of list
    payloads). Waiting raises :class:`PipelineAborted` if the pipeline is aborted first.

    What the item counts add up to: a list message of ``n`` items that a node handles
    into a shorter list of ``m`` items, ``k`` of them rejected on their own, records the
    ``n - k - m`` items it *dropped* as filtered items (``items[Outcome.FILTERED]``; not
    in :attr:`counts`, which counts messages that ended, and this one went on). So along
    chains of list-in, list-out handlers -- with filtering, rejections, poison isolation
    and failures -- ``sum(receipt.items.values())`` is the number of items submitted,
    once per sink. Handlers that change what an item is break that sum on purpose: an
    aggregation (a list in, one record out) ends with the one record it made, an
    expansion (a longer list, a generator's outputs) with the items it made; neither
    counts as dropping.

    The public methods are for whoever holds the receipt: waiting, callbacks, the counters
    and :meth:`release` (how a source's :class:`Tracked` receipt is let go). The
    bookkeeping -- :meth:`_fork`, :meth:`_settle`, :meth:`_record`, :meth:`_drop`,
    :meth:`_abort` -- is the
    runtime's alone (``_source``, ``_node``, ``_outputs``, ``_attempt``, ``_intake`` call
    it): single-underscore names used across the package's modules, never by users, whose
    calls would corrupt the counts.
    """

    __slots__ = (
        "__weakref__",
        "_future",
        "_pending",
        "counts",
        "dead_letters",
        "finished_at",
        "id",
        "items",
        "node",
        "origin",
        "submitted_at",
    )

    def __init__(
        self,
        node: str,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        origin: str | None = None,
    ) -> None:
        self.id: int = next(_ids)
        self.node = node
        #: What the message is, stably across resends (a batch id, a file path): dead
        #: letters derived from it carry it, so a replay can be recognised.
        self.origin = origin
        self.counts: dict[Outcome, int] = dict.fromkeys(Outcome, 0)
        self.items: dict[Outcome, int] = dict.fromkeys(Outcome, 0)
        #: Dead letters derived from this message (failures and rejected items).
        self.dead_letters: list[DeadLetter] = []
        self.submitted_at = time.monotonic()
        self.finished_at: float | None = None
        self._pending = 1
        loop = loop or asyncio.get_running_loop()
        self._future: asyncio.Future[Receipt] = loop.create_future()

    def __repr__(self) -> str:
        state = "done" if self.done() else f"pending={self._pending}"
        counts = ", ".join(f"{k}={v}" for k, v in self.counts.items() if v)
        return f"<Receipt #{self.id} {self.node!r} {state} {counts}>"

    def done(self) -> bool:
        """Whether every derived message has reached a terminal point (or it was aborted)."""
        return self._future.done()

    @property
    def committed(self) -> int:
        return self.counts[Outcome.COMMITTED]

    @property
    def filtered(self) -> int:
        return self.counts[Outcome.FILTERED]

    @property
    def dead_lettered(self) -> int:
        return self.counts[Outcome.DEAD_LETTERED]

    @property
    def skipped(self) -> int:
        return self.counts[Outcome.SKIPPED]

    @property
    def duration(self) -> float | None:
        """Seconds from submission to the last terminal event (None while pending)."""
        return None if self.finished_at is None else self.finished_at - self.submitted_at

    async def wait(self, timeout: float | None = None) -> Receipt:
        """Wait until done; raise TimeoutError after ``timeout`` seconds (the receipt lives on)."""
        async with asyncio.timeout(timeout):
            return await asyncio.shield(self._future)

    def __await__(self) -> Generator[Any, None, Receipt]:
        # wait() without its timeout machinery: awaiting a receipt is on every request's path.
        return asyncio.shield(self._future).__await__()

    def add_done_callback(self, callback: Callable[[Receipt], object]) -> None:
        """Call ``callback(receipt)`` soon after the receipt resolves (not if aborted)."""

        def done(future: asyncio.Future[Receipt]) -> None:
            if not future.cancelled() and future.exception() is None:
                callback(self)

        self._future.add_done_callback(done)

    def release(self) -> None:
        """Drop the hold a new receipt starts with (for a source's :class:`Tracked` items:
        call it once every item of the unit has been yielded)."""
        self._settle(None)

    # -- the runtime's bookkeeping (private to asyncpipe) ------------------------------------

    def _fork(self, n: int) -> None:
        """``n`` more derived messages are in flight."""
        self._pending += n

    def _settle(
        self, outcome: Outcome | None, payload: Any = None, *, items: int | None = None
    ) -> None:
        """One derived message is done; ``outcome`` None means it was transformed, not ended.

        ``items`` overrides the item count taken from ``payload``.
        """
        if outcome is not None:
            self._record(outcome, payload, items=items)
        self._pending -= 1
        if self._pending == 0 and not self._future.done():
            self.finished_at = time.monotonic()
            self._future.set_result(self)

    def _record(self, outcome: Outcome, payload: Any, *, items: int | None = None) -> None:
        """Count a terminal event without changing what is in flight."""
        self.counts[outcome] += 1
        self.items[outcome] += item_count(payload) if items is None else items

    def _drop(self, items: int) -> None:
        """``items`` items of a message that goes on were dropped by a handler: counted as
        filtered items, not as a filtered event (the message itself did not end)."""
        self.items[Outcome.FILTERED] += items

    def _abort(self, reason: str) -> None:
        """Fail the receipt's waiters with :class:`PipelineAborted` (unless it is done)."""
        if not self._future.done():
            self._future.set_exception(PipelineAborted(f"receipt #{self.id}: {reason}"))
            # Nobody may be waiting; mark the exception retrieved so asyncio does not log it.
            self._future.exception()


class Tracked(NamedTuple):
    """A source's item that should be followed to its end, like a ``submit()``-ed message.

    A source yields ``Tracked(payload, receipt)`` instead of ``payload`` when it needs to
    know that what it emitted was committed (a file watcher recording a file as done, a
    queue consumer acknowledging a message). Several items may share one receipt::

        receipt = Receipt("inbox")       # starts with one hold: it cannot resolve yet
        for batch in batches_of(path):
            yield Tracked(batch, receipt)
        receipt.release()                # every item yielded: drop the hold
        await receipt                    # resolves once every batch reached its end

    A receipt whose source stops before ``release()`` never resolves; one still pending
    when the pipeline is aborted raises :class:`PipelineAborted` to its waiters.
    """

    payload: Any
    receipt: Receipt
