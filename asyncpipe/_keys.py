"""Keyed routing: which lane of a keyed node handles a record.

A node given ``key=`` splits every list message by the key of each record (a message that
is not a list is one record) and hands each part to one of the node's ``workers`` lanes:
a key always goes to the same lane, so the records of one key are handled one message at
a time, in arrival order. The lane is :func:`stable_hash` of the key modulo the number of
lanes: the same in every process and every run (Python's ``hash()`` of a ``str`` is
randomised per process), so a multi-process server can route keys the same way.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Hashable
from typing import Any

__all__ = ["KeyFunction", "lane_of", "split_by_lane", "stable_hash"]

#: A function of a record returning its key (a str, int, bytes, or a tuple of those).
KeyFunction = Callable[[Any], Hashable]

_MASK = (1 << 64) - 1


def stable_hash(key: Hashable) -> int:
    """A hash of ``key`` that is the same in every process and every run.

    An ``int`` hashes to itself (as an unsigned 64-bit value), a ``str`` to the CRC-32 of
    its UTF-8 bytes, ``bytes`` to their CRC-32, anything else to the CRC-32 of its
    ``repr()`` (stable for tuples of str, int and bytes; not for objects whose ``repr``
    shows an address).
    """
    kind = type(key)
    if kind is int:
        return key & _MASK  # type: ignore[operator]
    if kind is str:
        return zlib.crc32(key.encode())  # type: ignore[attr-defined]
    if kind is bytes:
        return zlib.crc32(key)  # type: ignore[arg-type]
    return zlib.crc32(repr(key).encode())


def lane_of(key: Hashable, lanes: int) -> int:
    """The lane (``0 <= lane < lanes``) that handles ``key``."""
    return stable_hash(key) % lanes


def split_by_lane(
    records: list[Any], key: KeyFunction, lanes: int
) -> dict[int, tuple[list[Any], list[int]]]:
    """The records of a list message by lane: for each lane that has any, its records in
    arrival order and their positions in the message."""
    parts: dict[int, tuple[list[Any], list[int]]] = {}
    for index, record in enumerate(records):
        lane = lane_of(key(record), lanes)
        part = parts.get(lane)
        if part is None:
            parts[lane] = part = ([], [])
        part[0].append(record)
        part[1].append(index)
    return parts
