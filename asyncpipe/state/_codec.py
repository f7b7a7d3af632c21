"""Codecs: how state values, keys and stored outputs become bytes in a state store."""

from __future__ import annotations

import functools
import json
import pickle
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

__all__ = ["Codec", "JsonCodec", "PickleCodec", "encoder"]


@runtime_checkable
class Codec(Protocol):
    """Turns plain Python values into bytes and back.

    ``encode`` must be deterministic for keys: the same key always gives the same bytes
    (the store looks keys up by their bytes).
    """

    def encode(self, value: Any) -> bytes: ...

    def decode(self, data: bytes) -> Any: ...


class PickleCodec:
    """The default codec: any picklable value (protocol 5; keys must be hashable values
    whose pickle is deterministic: str, int, bytes, tuples of them)."""

    __slots__ = ()

    def encode(self, value: Any) -> bytes:
        return pickle.dumps(value, protocol=5)

    def decode(self, data: bytes) -> Any:
        return pickle.loads(data)

    def __repr__(self) -> str:
        return "PickleCodec()"


class JsonCodec:
    """A portable codec: JSON (UTF-8, keys of objects sorted). Values round-trip as JSON
    does: tuples come back as lists, so use str or int keys with it."""

    __slots__ = ()

    def encode(self, value: Any) -> bytes:
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()

    def decode(self, data: bytes) -> Any:
        return json.loads(data)

    def __repr__(self) -> str:
        return "JsonCodec()"


def encoder(codec: Codec) -> Callable[[Any], bytes]:
    """``codec.encode``, or for the default codec the same bytes without a Python call
    per value (state encoded at each commit: a call is a visible share per key)."""
    if type(codec) is PickleCodec:
        return functools.partial(pickle.dumps, protocol=5)
    return codec.encode
