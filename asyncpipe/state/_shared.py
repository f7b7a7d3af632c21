"""Shared mode: one stateful node run by several processes over one store.

Several server processes, each with its own pipeline, may run the same stateful node on
the same store (``SqliteStateStore(path, shared=True)``, ``PostgresStateStore(dsn,
shared=True)``). Each process would otherwise keep its own cache of the keys, commit
while it applies the next messages, and send again at start what another process is
still delivering. In shared mode a lane handles each group of messages inside the
namespace's **exclusive section** (:meth:`SharedStore.exclusive`: a lock that one process
holds at a time -- an ``flock`` on a file beside the SQLite database, a PostgreSQL
advisory lock) and, holding it:

1. sends again the outputs left in the outbox (only a process that died inside the
   section leaves any: step 5 records every delivery before the section ends) and waits
   until they reach their ends;
2. looks the group's names up in the marks (except a fresh relay's: its upstream
   message's mark was new when committed in the upstream node's section, so no process
   delivered outputs named after it before) and forgets the keys it holds in memory
   (:meth:`LaneState.forget`);
3. applies the group, the keys read again from the store;
4. commits (one transaction, as in the normal mode);
5. sends the outputs, waits until they reach their ends (sinks committed), and commits
   that they did.

So the groups of one node are applied one after the other across all processes, each on
the state the previous one committed, and their outputs reach the sinks in commit order:
an upsert sink ends with the row of the last commit. The section holds the lock while
the outputs travel downstream; a stateful node downstream takes its own section inside
it -- locks are taken in the graph's order, so no two sections wait for each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

from .._channel import Channel, EndOfStream
from .._handler import collect_rejections
from .._lanes import Arrivals
from ._lane import Lane, _redeliver, _take

__all__ = ["FileLocks", "SharedLane", "SharedStore", "is_shared"]


@runtime_checkable
class SharedStore(Protocol):
    """A store in shared mode: ``shared`` is true and :meth:`exclusive` excludes every
    other process (and every other lane of this process) from a namespace's section."""

    shared: bool

    def exclusive(self, namespace: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold the namespace's lock for the ``async with`` block."""
        ...


def is_shared(store: Any) -> bool:
    """Whether ``store`` is a store in shared mode."""
    return bool(getattr(store, "shared", False)) and isinstance(store, SharedStore)


class SharedLane(Lane):
    """A lane in shared mode: each group in the namespace's exclusive section (module
    docstring)."""

    async def run(self, channel: Channel[Any], arrivals: Arrivals | None) -> None:
        self.rejections = collect_rejections()
        store = self.store
        assert isinstance(store, SharedStore)
        runtime, state = self.runtime, self.state
        while True:
            group = _take(channel, [], arrivals)
            if not group:
                try:
                    first = await channel.get()
                except EndOfStream:
                    return
                group = _take(channel, [first], arrivals)
            async with store.exclusive(self.namespace):
                self.delivered.extend(await _redeliver(runtime, self.store, state.codec))
                state.forget()
                applied = await self._apply_group(group, None)
                await self._finish(self._start_commit(applied))
                await self.close()  # delivered, and recorded as such


class FileLocks:
    """Exclusive sections across the processes of one machine: an ``flock`` on a file
    per namespace in ``directory`` (created if missing), and an :class:`asyncio.Lock`
    per namespace for the lanes of this process. The kernel drops a dead process's
    ``flock``: a crash inside a section never leaves it locked."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._locks: dict[str, asyncio.Lock] = {}
        self._files: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def exclusive(self, namespace: str) -> AsyncIterator[None]:
        lock = self._locks.get(namespace)
        if lock is None:
            lock = self._locks[namespace] = asyncio.Lock()
        async with lock:
            fd = self._file(namespace)
            await _flock(fd)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def _file(self, namespace: str) -> int:
        fd = self._files.get(namespace)
        if fd is None:
            os.makedirs(self.directory, exist_ok=True)
            name = urllib.parse.quote(namespace, safe="")
            path = os.path.join(self.directory, name)
            fd = self._files[namespace] = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        return fd

    def close(self) -> None:
        files, self._files = self._files, {}
        for fd in files.values():
            os.close(fd)


async def _flock(fd: int) -> None:
    """Take ``fd``'s exclusive ``flock``: at once if it is free, else waiting on a thread
    (the event loop goes on). A cancelled wait lets the thread finish, then unlocks."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    waiting = asyncio.ensure_future(asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX))
    try:
        await asyncio.shield(waiting)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await waiting
            fcntl.flock(fd, fcntl.LOCK_UN)
        raise
