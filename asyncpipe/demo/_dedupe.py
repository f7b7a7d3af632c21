"""Bounded dedupe: the last N distinct ids seen, so a resent transaction counts once."""

from __future__ import annotations

from collections import deque

__all__ = ["DEDUPE_IDS", "RecentIds"]

#: The default bound. An id costs about 74 bytes here (set slot, deque slot, the int),
#: so 2,000,000 ids is ~150 MB at most, reached only after 2M distinct transactions.
#: It covers the resend window of :class:`~asyncpipe.ingest.IngestClient` even at the
#: load test's peak: a batch is resent at most ~52 s after its first send (6 attempts of
#: 10 s, backoff under 2 s in all), and the demo server peaks near 32k items/s: ~1.7M ids.
DEDUPE_IDS = 2_000_000


class RecentIds:
    """Remembers the last ``capacity`` distinct ids added, forgetting the oldest first.

    :meth:`add` answers whether an id is new. Memory stays bounded however long the
    server runs: at most ``capacity`` ids are kept (the previous unbounded set grew by
    ~74 bytes per distinct transaction id, forever).

    Trade-off: a resend that arrives after ``capacity`` other distinct ids is no longer
    recognised and counts twice. Eviction is by first arrival (a resend does not refresh
    an id): the window is "N distinct ids after the first send", what a client's retries
    are bounded by. A later issue replaces this with durable keyed state and expiring ids.
    """

    __slots__ = ("_ids", "_order", "capacity")

    def __init__(self, capacity: int = DEDUPE_IDS) -> None:
        if capacity < 1:
            raise ValueError(f"RecentIds: capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._ids: set[int] = set()
        # A set plus a deque rather than an ordered dict: O(1) eviction (dict's first key
        # is found by skipping deleted slots) at half OrderedDict's memory per id.
        self._order: deque[int] = deque()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, key: int) -> bool:
        return key in self._ids

    def add(self, key: int) -> bool:
        """Remember ``key``; True if it was not among the remembered ids."""
        ids = self._ids
        if key in ids:
            return False
        ids.add(key)
        order = self._order
        order.append(key)
        if len(order) > self.capacity:
            ids.discard(order.popleft())
        return True
