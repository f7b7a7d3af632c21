"""JSON encoding shared by the JSON Lines sinks and the dead-letter sinks."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import uuid
from pathlib import PurePath
from typing import Any

__all__ = ["dumps", "dumps_lenient", "json_default"]


def json_default(obj: Any) -> Any:
    """Encode the usual non-JSON values of records: dates and times (ISO 8601), Decimal
    (as a string, keeping its precision), UUID and paths (strings), sets (lists), bytes
    (UTF-8 text, undecodable bytes as ``\\xNN``), enums (their value), dataclasses (dicts).

    Raises ``TypeError`` for anything else.
    """
    if isinstance(obj, datetime.date | datetime.time):
        return obj.isoformat()
    if isinstance(obj, decimal.Decimal | uuid.UUID | PurePath):
        return str(obj)
    if isinstance(obj, set | frozenset):
        return list(obj)
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj).decode("utf-8", "backslashreplace")
    if isinstance(obj, enum.Enum):
        return obj.value
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(f"{type(obj).__qualname__} is not JSON serializable")


def dumps(obj: Any) -> str:
    """One compact JSON document (UTF-8 text kept as is); raise for unencodable values."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=json_default)


def _lenient_default(obj: Any) -> Any:
    try:
        return json_default(obj)
    except TypeError:
        return repr(obj)


def dumps_lenient(obj: Any) -> str:
    """Like :func:`dumps` but never fails: what JSON cannot hold becomes its ``repr``."""
    try:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=_lenient_default)
    except (TypeError, ValueError, RecursionError):  # non-string keys, cycles, depth
        return json.dumps(repr(obj), ensure_ascii=False)
