"""Helpers shared by the connector tests (a plain module: tests/ has no conftest)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asyncpipe import HandlerNode, PipelineExecutor
from asyncpipe.testing import CollectingSink, run_pipeline

TIMEOUT = 10.0  # seconds any one pipeline in these tests may take


async def collect(source: Any, **executor_options: Any) -> tuple[list[Any], PipelineExecutor]:
    """Run ``source -> CollectingSink``; return the messages and the executor."""
    sink = CollectingSink()
    src = HandlerNode("source", source)
    out = HandlerNode("sink", sink, [src])
    executor = await run_pipeline([src], [out], timeout=TIMEOUT, **executor_options)
    return sink.items, executor


def flatten(messages: Sequence[Any]) -> list[Any]:
    return [record for message in messages for record in message]


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def query(db: Path, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Read from the database on a separate connection (what another process would see)."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(sql, parameters).fetchall()
    conn.close()
    return rows
