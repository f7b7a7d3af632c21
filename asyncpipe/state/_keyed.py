"""Keyed state: a handler that receives, per key, its state and the records, and returns
the new state and what to emit."""

from __future__ import annotations

import collections
import inspect
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Any

from .._errors import HandlerError
from .._graph import ErrorPolicy
from .._handler import BaseHandler, Rejection
from .._keys import KeyFunction
from ._codec import Codec, PickleCodec, encoder
from ._lane import LaneState, run_stateful
from ._store import StateStore

if TYPE_CHECKING:
    from .._node import NodeRuntime

__all__ = ["DEFAULT_CACHE_SIZE", "KeyedHandler", "stateful_map"]

logger = logging.getLogger(__name__)

#: Keys a lane keeps decoded in memory, at most, over a persistent store.
DEFAULT_CACHE_SIZE = 100_000

_ABSENT: Any = object()  # the key has no state (in the store either)


def _no_key(record: Any) -> None:
    return None


class KeyedHandler(BaseHandler):
    """Base class of handlers that keep state per key.

    Put it in a node with ``key=`` (``HandlerNode("profiles", Profiles(), [src],
    key=lambda r: r["client_id"])``). For each message, the records are grouped by key (a
    message that is not a list is one record) and, key after key in order of first
    appearance, :meth:`update` receives the key's state and its records in arrival order
    and returns ``(new_state, outputs)``. ``new_state`` None deletes the key (its next
    record starts again from :meth:`initial`); ``outputs`` is a list of records (or None)
    -- the outputs of every key of the message are sent on as one list message.

    State is plain Python values. With a persistent store (``PipelineExecutor(...,
    state_store=SqliteStateStore(path))``) every change is committed, with the message's
    name and outputs, before the outputs leave the node; the class attributes
    :attr:`codec` (how values and keys become bytes) and :attr:`cache_size` (keys kept in
    memory per lane) can be overridden. :meth:`update` should not keep references to
    state objects it did not return, and should mutate a state in place only if it cannot
    fail afterwards: a failing :meth:`update` leaves the key's previous state in place,
    and its records are dead-lettered (``on_error="fail"``: the pipeline stops).
    """

    codec: Codec = PickleCodec()
    cache_size: int = DEFAULT_CACHE_SIZE

    def initial(self, key: Any) -> Any:
        """The state of a key seen for the first time (default None)."""
        return None

    def update(self, key: Any, state: Any, records: list[Any]) -> Any:
        """Return ``(new_state, outputs)`` for ``records`` of ``key`` (``async def`` or
        plain ``def``)."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement update()")

    def handle(self, data: Any) -> Any:
        raise TypeError(
            f"{type(self).__qualname__} is a keyed handler: put it in a HandlerNode "
            "(its runtime calls update() per key)"
        )

    def _asyncpipe_lanes(self, runtime: NodeRuntime) -> Awaitable[None]:
        key = runtime.node.key or _no_key
        fail = runtime.node.on_error is ErrorPolicy.FAIL
        return run_stateful(runtime, lambda: _KeyedLane(self, key, runtime.name, fail))


class _KeyedLane(LaneState):
    shareable = True

    def __init__(self, handler: KeyedHandler, key: KeyFunction, node: str, fail: bool) -> None:
        self.handler = handler
        self.key = key
        self.node = node
        self.fail = fail
        self.codec = handler.codec
        self.update = handler.update
        self.is_async = inspect.iscoroutinefunction(handler.update)
        self.cache: collections.OrderedDict[Hashable, Any] = collections.OrderedDict()
        self.dirty: dict[Hashable, Any] = {}
        self.store: StateStore | None = None
        self.namespace = node

    async def open(self, store: StateStore, namespace: str, lane: int, lanes: int) -> None:
        self.store = store if store.persistent else None
        self.namespace = namespace

    async def prepare(self, parts: list[Any]) -> list[Any]:
        key = self.key
        cache = self.cache
        prepared = []
        missing: set[Hashable] = set()
        for part in parts:
            records = part if type(part) is list else [part]
            groups: dict[Hashable, tuple[list[Any], list[int]]] = {}
            for index, record in enumerate(records):
                k = key(record)
                group = groups.get(k)
                if group is None:
                    groups[k] = group = ([], [])
                    if k not in cache:
                        missing.add(k)
                group[0].append(record)
                group[1].append(index)
            prepared.append(groups)
        if missing:
            await self._load(missing)
        return prepared

    async def _load(self, keys: set[Hashable]) -> None:
        cache = self.cache
        if self.store is None:
            for k in keys:
                cache[k] = _ABSENT
            return
        encode = encoder(self.codec)
        encoded = {encode(k): k for k in keys}
        found = await self.store.load(self.namespace, list(encoded))
        decode = self.codec.decode
        for data, k in encoded.items():
            value = found.get(data)
            cache[k] = _ABSENT if value is None else decode(value)

    async def apply(self, prepared: Any) -> tuple[list[Any], list[Rejection]]:
        groups: dict[Hashable, tuple[list[Any], list[int]]] = prepared
        cache = self.cache
        dirty = self.dirty
        outputs: list[Any] = []
        rejected: list[Rejection] = []
        for k, (records, indices) in groups.items():
            state = cache.get(k, _ABSENT)  # absent: never seen, or deleted (in memory only)
            if state is _ABSENT:
                state = self.handler.initial(k)
            try:
                result = self.update(k, state, records)
                # A plain update() returns a tuple: no need to ask (300 ns a key).
                if self.is_async or (type(result) is not tuple and inspect.isawaitable(result)):
                    result = await result
                new_state, out = result
            except Exception as exc:
                self._failed(exc, k, records, indices, rejected)
                continue
            if new_state is None:
                dirty[k] = None
                if self.store is None:
                    cache.pop(k, None)  # the only copy: forget the key
                else:
                    cache[k] = _ABSENT  # known absent: no need to load it again
                    cache.move_to_end(k)
            else:
                cache[k] = dirty[k] = new_state
                cache.move_to_end(k)
            if out:
                outputs.extend(out)
        return outputs, rejected

    def _failed(
        self,
        exc: Exception,
        key: Hashable,
        records: list[Any],
        indices: list[int],
        rejected: list[Rejection],
    ) -> None:
        label = f"{type(self.handler).__qualname__}.update()"
        if self.fail:
            raise HandlerError(self.node, f"{label} raised {type(exc).__name__}: {exc}") from exc
        logger.warning(
            "node %r: %s raised for key %r; its %d record(s) dead-lettered",
            self.node,
            label,
            key,
            len(records),
            exc_info=exc,
            extra={"node": self.node},
        )
        reason = f"{label} raised {type(exc).__name__}: {exc}"
        rejected.extend(Rejection(r, reason, i) for r, i in zip(records, indices, strict=True))

    def forget(self) -> None:
        # Shared mode: called between commits, so nothing in the cache is dirty.
        self.cache.clear()

    def changes(self) -> list[tuple[bytes, bytes | None]]:
        encode = encoder(self.codec)
        changed = [(encode(k), None if v is None else encode(v)) for k, v in self.dirty.items()]
        self.dirty.clear()
        return changed

    def committed(self) -> None:
        if self.store is None:  # the only copy: nothing to evict, nothing to write
            self.dirty.clear()
            return
        # Over a persistent store memory is a cache. Keys changed since the last snapshot
        # are not durable yet: they stay (moved to the recent end).
        cache, dirty, bound = self.cache, self.dirty, self.handler.cache_size
        skipped = 0
        while len(cache) > bound and skipped < len(cache):
            k, state = cache.popitem(last=False)
            if k in dirty:
                cache[k] = state
                skipped += 1


class _Mapped(KeyedHandler):
    """What :func:`stateful_map` returns."""

    def __init__(
        self,
        fn: Callable[[Any, Any], tuple[Any, Any]],
        initial: Callable[[Any], Any] | None,
        codec: Codec | None,
    ) -> None:
        self.fn = fn
        self.start = initial
        if codec is not None:
            self.codec = codec

    def __repr__(self) -> str:
        return f"stateful_map({getattr(self.fn, '__qualname__', self.fn)!r})"

    def initial(self, key: Any) -> Any:
        return None if self.start is None else self.start(key)

    def update(self, key: Any, state: Any, records: list[Any]) -> tuple[Any, list[Any]]:
        fn = self.fn
        outputs = []
        for record in records:
            if state is None:
                state = self.initial(key)
            state, output = fn(state, record)
            if output is not None:
                outputs.append(output)
        return state, outputs


def stateful_map(
    fn: Callable[[Any, Any], tuple[Any, Any]],
    initial: Callable[[Any], Any] | None = None,
    *,
    codec: Codec | None = None,
) -> KeyedHandler:
    """A keyed handler from a function: ``fn(state, record) -> (state, output)``, record
    by record (Bytewax's ``stateful_map``).

    ``state`` starts as ``initial(key)`` (None without ``initial``); returning None as
    the state deletes the key (its next record starts again from ``initial``). Outputs
    that are not None are sent on, as one list message per incoming message.
    """
    return _Mapped(fn, initial, codec)
