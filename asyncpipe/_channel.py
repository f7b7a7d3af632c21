"""Bounded, closable channels: the edges of a pipeline.

Python 3.11's ``asyncio.Queue`` cannot be closed (``Queue.shutdown()`` arrived in 3.13), so
:class:`Channel` implements the same waiter algorithm with 3.13's closing semantics:

* ``close()`` (graceful): no more puts; receivers drain what is buffered, then iteration ends.
* ``abort()`` (immediate): buffered items are dropped, waiting senders fail with
  :class:`ChannelClosed`, receivers end at once. Used when a pipeline is torn down.

A channel counts its senders: each upstream node (and the pipeline's intake) registers with
``add_sender()`` and calls ``close_sender()`` when it has nothing more to send; the last one
closes the channel. That is how end-of-stream flows down a DAG with fan-in.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ._errors import ChannelClosed, EndOfStream

__all__ = ["Channel", "ChannelStatistics", "EndOfStream"]

T = TypeVar("T")
D = TypeVar("D")

#: A sentinel for :meth:`Channel.get_nowait`'s default.
EMPTY: Any = object()


@dataclass(frozen=True, slots=True)
class ChannelStatistics:
    """A snapshot of a channel's state, for metrics."""

    capacity: int
    depth: int
    high_water: int
    senders: int
    waiting_senders: int
    waiting_receivers: int
    closed: bool


class Channel(Generic[T]):
    """A bounded FIFO between asyncio tasks that can be closed by its senders."""

    __slots__ = (
        "_buffer",
        "_capacity",
        "_closed",
        "_getters",
        "_putters",
        "_senders",
        "high_water",
        "name",
    )

    def __init__(self, capacity: int, name: str = "") -> None:
        if capacity < 1:
            raise ValueError(f"channel {name!r}: capacity must be >= 1, got {capacity}")
        self.name = name
        self._capacity = capacity
        self._buffer: collections.deque[T] = collections.deque()
        self._getters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._putters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._senders = 0
        self._closed = False
        #: The largest number of items ever buffered at once.
        self.high_water = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<Channel {self.name!r} {len(self._buffer)}/{self._capacity} {state}>"

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._buffer)

    # -- senders ---------------------------------------------------------------------------

    def add_sender(self) -> None:
        """Register one more sender; the channel stays open until every sender has closed."""
        if self._closed:
            raise ChannelClosed(f"channel {self.name!r} is closed")
        self._senders += 1

    def close_sender(self) -> None:
        """Unregister a sender; closing the last one closes the channel (gracefully)."""
        if self._senders > 0:
            self._senders -= 1
            if self._senders == 0:
                self.close()

    def close(self) -> None:
        """Accept no more items; receivers drain the buffer, then see end-of-stream."""
        if self._closed:
            return
        self._closed = True
        self._senders = 0
        _wake_all(self._getters)
        _wake_all(self._putters)

    def abort(self) -> None:
        """Close and drop everything buffered; waiting senders fail with ChannelClosed."""
        self._buffer.clear()
        self.close()

    # -- put / get -------------------------------------------------------------------------

    def put_nowait(self, item: T) -> bool:
        """Put without waiting; return False when the channel is full.

        Raises :class:`ChannelClosed` when the channel is closed.
        """
        if self._closed:
            raise ChannelClosed(f"channel {self.name!r} is closed")
        buffer = self._buffer
        if len(buffer) >= self._capacity:
            return False
        buffer.append(item)
        if len(buffer) > self.high_water:
            self.high_water = len(buffer)
        if self._getters:
            _wake_one(self._getters)
        return True

    async def put(self, item: T) -> None:
        """Put an item, waiting while the channel is full (backpressure).

        Raises :class:`ChannelClosed` if the channel is or becomes closed.
        """
        while len(self._buffer) >= self._capacity and not self._closed:
            await self._wait(self._putters)
        if not self.put_nowait(item):  # pragma: no cover - the loop above guarantees room
            raise AssertionError("channel full after wait")

    async def get(self) -> T:
        """Remove and return the next item, waiting while the channel is empty.

        Raises :class:`EndOfStream` once the channel is closed and empty.
        """
        buffer = self._buffer
        while not buffer:
            if self._closed:
                raise EndOfStream
            await self._wait(self._getters)
        item = buffer.popleft()
        if self._putters:
            _wake_one(self._putters)
        return item

    def get_nowait(self, default: D) -> T | D:
        """Remove and return the next item if there is one, else return ``default``."""
        buffer = self._buffer
        if not buffer:
            return default
        item = buffer.popleft()
        if self._putters:
            _wake_one(self._putters)
        return item

    async def __aiter__(self) -> AsyncIterator[T]:
        while True:
            try:
                yield await self.get()
            except EndOfStream:
                return

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            capacity=self._capacity,
            depth=len(self._buffer),
            high_water=self.high_water,
            senders=self._senders,
            waiting_senders=sum(not f.done() for f in self._putters),
            waiting_receivers=sum(not f.done() for f in self._getters),
            closed=self._closed,
        )

    async def _wait(self, waiters: collections.deque[asyncio.Future[None]]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.append(future)
        try:
            await future
        except BaseException:
            # Cancelled while waiting. If we had already been woken, pass the wake-up on so
            # it is not lost (the same dance as asyncio.Queue).
            future.cancel()
            try:
                waiters.remove(future)
            except ValueError:
                pass
            if not future.cancelled():
                _wake_one(waiters)
            raise


def _wake_one(waiters: collections.deque[asyncio.Future[None]]) -> bool:
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return True
    return False


def _wake_all(waiters: collections.deque[asyncio.Future[None]]) -> None:
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
