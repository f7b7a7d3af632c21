"""Batching sources: the base of every connector source, and :class:`IterableSource`.

A source is an async iterable of *messages*; connector sources emit lists of up to
``batch_size`` records, because per-message costs (a channel hand-off, a handler call, a
transaction) are paid per batch, not per record. Every source object can be iterated
again: each ``async for`` starts over (a new file handle, a new query).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable
from contextlib import aclosing
from typing import Any

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "BatchingSource",
    "IterableSource",
    "batched",
    "check_batch_size",
]

#: Records per emitted message unless a source is told otherwise.
DEFAULT_BATCH_SIZE = 500


def check_batch_size(batch_size: int) -> int:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    return batch_size


class BatchingSource:
    """Base class: subclasses implement :meth:`record_lists`, this cuts them into batches."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = check_batch_size(batch_size)

    def __aiter__(self) -> AsyncIterator[list[Any]]:
        return self._batches()

    def record_lists(self) -> AsyncGenerator[list[Any], None]:
        """Records in lists of any length (typically one list per chunk read)."""
        raise NotImplementedError

    def _batches(self) -> AsyncGenerator[list[Any], None]:
        return batched(self.record_lists(), self.batch_size)


async def batched(
    lists: AsyncGenerator[list[Any], None], size: int
) -> AsyncGenerator[list[Any], None]:
    """The records of ``lists`` in lists of ``size`` (the last one shorter)."""
    pending: list[Any] = []
    async with aclosing(lists):
        async for records in lists:
            if pending:
                records = pending + records
            whole = len(records) - len(records) % size
            for start in range(0, whole, size):
                yield records[start : start + size]
            pending = records[whole:]
    if pending:
        yield pending


class IterableSource(BatchingSource):
    """Emit the items of an iterable or async iterable in lists of ``batch_size``.

    For tests and embedding: ``HandlerNode("clients", IterableSource(rows, batch_size=200))``.
    (A plain list or generator given to a node is already a source, emitting each item as
    its own message; this groups them.) Iterating again iterates ``items`` again, so pass a
    re-iterable (a list) if the source should be re-runnable.
    """

    def __init__(self, items: Iterable[Any] | AsyncIterable[Any], batch_size: int = 500) -> None:
        super().__init__(batch_size)
        if isinstance(items, str | bytes) or not isinstance(items, Iterable | AsyncIterable):
            raise TypeError(f"IterableSource needs an iterable of records, got {items!r}")
        self.items = items

    def __repr__(self) -> str:
        return f"<IterableSource batch_size={self.batch_size}>"

    async def _batches(self) -> AsyncGenerator[list[Any], None]:
        size = self.batch_size
        batch: list[Any] = []
        if isinstance(self.items, AsyncIterable):
            async for item in self.items:
                batch.append(item)
                if len(batch) == size:
                    yield batch
                    batch = []
        else:
            for item in self.items:
                batch.append(item)
                if len(batch) == size:
                    yield batch
                    batch = []
        if batch:
            yield batch
