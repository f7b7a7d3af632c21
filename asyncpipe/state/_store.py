"""The state store protocol: what a stateful node needs from where its state lives.

A store holds, per *namespace* (a stateful node's name):

* **state**: key -> value, both bytes (encoded by the node's codec);
* **marks**: the names of the messages already applied (``origin␟n/lane``), each with the
  items the message rejected and, until they are known to be delivered, the outputs it
  produced (its *outbox*), in the order they were committed;
* **meta**: name -> bytes (a window lane's watermark, say).

:meth:`StateStore.commit` applies one :class:`StateCommit` atomically: either all of it is
durable or none of it. That atomicity is the whole guarantee -- see ``docs/state.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = ["StateCommit", "StateStore", "StoredMark"]


@dataclass(slots=True)
class StateCommit:
    """What one group of messages changed, written in one transaction."""

    #: (key, value) pairs to write; a value of None deletes the key.
    changes: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    #: Messages applied: (name, rejections, outputs) -- ``outputs`` None when the message
    #: produced none.
    marks: list[tuple[str, bytes, bytes | None]] = field(default_factory=list)
    #: Names of marks whose outputs are now delivered (committed downstream): drop their
    #: outputs, keep the mark.
    delivered: list[str] = field(default_factory=list)
    #: Meta entries to write.
    meta: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredMark:
    """A mark as the store returns it."""

    rejections: bytes
    outputs: bytes | None


@runtime_checkable
class StateStore(Protocol):
    """Where stateful nodes keep their state (see the module docstring).

    ``persistent`` says whether the store survives the process. A non-persistent store
    (:class:`MemoryStateStore`) keeps the nodes' state in their own memory: they do not
    encode state for it, and only deduplicate replays within one run.

    Marks expire: a store forgets delivered marks older than its time to live. Every
    method may be called from any lane of any node, one call at a time per namespace.
    """

    persistent: bool

    async def open(self) -> None:
        """Create or open the storage (called once, before any node runs)."""
        ...

    async def aclose(self) -> None:
        """Release the storage (idempotent)."""
        ...

    async def load(self, namespace: str, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        """The stored values of those ``keys`` that have one."""
        ...

    async def scan(self, namespace: str) -> list[tuple[bytes, bytes]]:
        """Every (key, value) of the namespace."""
        ...

    async def seen(self, namespace: str, names: Sequence[str]) -> dict[str, StoredMark]:
        """The marks among ``names`` that exist."""
        ...

    async def undelivered(self, namespace: str) -> list[tuple[str, bytes]]:
        """(name, outputs) of every mark whose outputs are not known to be delivered, in
        commit order."""
        ...

    async def read_meta(self, namespace: str) -> dict[str, bytes]:
        """Every meta entry of the namespace."""
        ...

    async def commit(self, namespace: str, commit: StateCommit) -> None:
        """Apply ``commit`` atomically (all of it durable, or none of it)."""
        ...
