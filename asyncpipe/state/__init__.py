"""Keyed state, windows and durable state stores.

* **Keyed processing**: ``HandlerNode(..., key=fn, workers=n)`` routes each record to one
  of ``n`` lanes by :func:`stable_hash` of its key: one key, one lane, arrival order.
* **Keyed state**: a :class:`KeyedHandler` subclass (``initial(key)``, ``update(key,
  state, records) -> (new_state, outputs)``) or :func:`stateful_map` (``fn(state, record)
  -> (state, output)``).
* **Durability**: ``PipelineExecutor(..., state_store=SqliteStateStore(path))`` (or
  :class:`PostgresStateStore`, extra ``[postgres]``). Once a receipt resolves, the state
  changes it caused are durable; after a crash, replays of messages already applied
  (same ``origin``) do not touch the state again. The design is in ``docs/state.md``.
* **Windows**: :class:`Windowed` with :class:`Tumbling`, :class:`Sliding` or
  :class:`Session` windows over event time, a watermark and allowed lateness, and
  reducers (:func:`count`, :func:`total`, :func:`minimum`, :func:`maximum`, :func:`mean`,
  :func:`collect`, :func:`fold`).
"""

from __future__ import annotations

from .._exports import claim_module as _claim_module
from .._keys import stable_hash
from ._codec import Codec, JsonCodec, PickleCodec
from ._keyed import DEFAULT_CACHE_SIZE, KeyedHandler, stateful_map
from ._memory import DEFAULT_DEDUPE_TTL, MemoryStateStore
from ._postgres import PostgresStateStore
from ._reducers import Reducer, collect, count, fold, maximum, mean, minimum, total
from ._sqlite import SqliteStateStore
from ._store import StateCommit, StateStore, StoredMark
from ._windows import Session, Sliding, Tumbling, Windowed

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_DEDUPE_TTL",
    "Codec",
    "JsonCodec",
    "KeyedHandler",
    "MemoryStateStore",
    "PickleCodec",
    "PostgresStateStore",
    "Reducer",
    "Session",
    "Sliding",
    "SqliteStateStore",
    "StateCommit",
    "StateStore",
    "StoredMark",
    "Tumbling",
    "Windowed",
    "collect",
    "count",
    "fold",
    "maximum",
    "mean",
    "minimum",
    "stable_hash",
    "stateful_map",
    "total",
]

_claim_module(globals(), __all__, __name__)
stable_hash.__module__ = __name__  # defined in the core (routing), public here
