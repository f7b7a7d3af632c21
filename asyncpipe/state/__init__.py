"""Keyed state, windows and durable state stores.

* **Keyed processing**: ``HandlerNode(..., key=fn, workers=n)`` routes each record to one
  of ``n`` lanes by :func:`stable_hash` of its key: one key, one lane, arrival order.
* **Keyed state**: a :class:`KeyedHandler` subclass (``initial(key)``, ``update(key,
  state, records) -> (new_state, outputs)``) or :func:`stateful_map` (``fn(state, record)
  -> (state, output)``).
* **Durability**: ``PipelineExecutor(..., state_store=SqliteStateStore(path))``. Once a
  receipt resolves, the state changes it caused are durable; after a crash, replays of
  messages already applied (same ``origin``) do not touch the state again. The design is
  in ``docs/state.md``.
"""

from __future__ import annotations

from .._exports import claim_module as _claim_module
from .._keys import stable_hash
from ._codec import Codec, JsonCodec, PickleCodec
from ._keyed import DEFAULT_CACHE_SIZE, KeyedHandler, stateful_map
from ._memory import DEFAULT_DEDUPE_TTL, MemoryStateStore
from ._sqlite import SqliteStateStore
from ._store import StateCommit, StateStore, StoredMark

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_DEDUPE_TTL",
    "Codec",
    "JsonCodec",
    "KeyedHandler",
    "MemoryStateStore",
    "PickleCodec",
    "SqliteStateStore",
    "StateCommit",
    "StateStore",
    "StoredMark",
    "stable_hash",
    "stateful_map",
]

_claim_module(globals(), __all__, __name__)
stable_hash.__module__ = __name__  # defined in the core (routing), public here
