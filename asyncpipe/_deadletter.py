"""Dead letters: messages (or single items) a node could not process, kept with the reason."""

from __future__ import annotations

import hashlib
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["DeadLetter", "DeadLetterSink", "MemoryDeadLetterSink"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """What failed, where, why, and the payload that failed."""

    node: str
    error_type: str
    error_message: str
    payload: Any
    traceback: str | None = None
    attempts: int = 1
    #: Position of a rejected item in its incoming batch, when the handler said so.
    index: int | None = None
    #: Id of the receipt of the submitted message this came from, if any.
    receipt_id: int | None = None
    timestamp: float = field(default_factory=time.time)
    #: The input this came from, stable across replays (a batch id, a file path); with
    #: ``index`` it identifies the failed input, so sinks can keep one letter per input.
    origin: str | None = None

    @property
    def key(self) -> str | None:
        """The identity a replayed input's dead letter shares with the first one, or None
        without an origin: node, origin, index and a digest of the payload (two messages
        derived from one input may fail at one node, each with its own payload)."""
        if self.origin is None:
            return None
        digest = hashlib.blake2b(repr(self.payload).encode(), digest_size=8).hexdigest()
        index = "" if self.index is None else str(self.index)
        return f"{self.node}\x1f{self.origin}\x1f{index}\x1f{digest}"

    @classmethod
    def from_exception(
        cls,
        node: str,
        exc: BaseException,
        payload: Any,
        *,
        attempts: int,
        receipt_id: int | None,
        origin: str | None = None,
        index: int | None = None,
    ) -> DeadLetter:
        return cls(
            node=node,
            error_type=type(exc).__qualname__,
            error_message=str(exc),
            payload=payload,
            traceback="".join(traceback.format_exception(exc)),
            attempts=attempts,
            receipt_id=receipt_id,
            origin=origin,
            index=index,
        )


@runtime_checkable
class DeadLetterSink(Protocol):
    """Where dead letters go. One async method; it should not raise."""

    async def write(self, letter: DeadLetter) -> None: ...


class MemoryDeadLetterSink:
    """The default sink: keeps dead letters in a list (``.letters``)."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def write(self, letter: DeadLetter) -> None:
        self.letters.append(letter)

    def __len__(self) -> int:
        return len(self.letters)

    def __repr__(self) -> str:
        return f"<MemoryDeadLetterSink {len(self.letters)} letters>"
