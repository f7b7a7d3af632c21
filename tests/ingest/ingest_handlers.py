"""Handlers for the ingestion tests that run in worker processes (importable there)."""

from __future__ import annotations

from typing import Any

from asyncpipe import BaseHandler


class SetUpWhenReleased(BaseHandler):
    """A ``cpu=True`` pass-through whose ``setup()``, in each worker, blocks until the test
    opens the FIFO at ``path`` for writing."""

    def __init__(self, path: str) -> None:
        self.path = path

    async def setup(self) -> None:
        with open(self.path, "rb"):  # blocks until a writer opens it  # noqa: ASYNC230
            pass

    async def handle(self, data: Any) -> Any:
        return data
