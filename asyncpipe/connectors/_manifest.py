"""The manifest of a RequestTrigger: which files it has already fed, kept on disk.

A JSON Lines file, one line per file: ``{"file": name, "status": "done" | "failed",
"size": bytes, "mtime_ns": ..., "at": ISO time, "error": ...}``. A line is appended (and
fsynced) once a file has been fed to the pipeline, so a restarted trigger skips it. A
damaged line (a crash mid-write) is ignored with a warning. Delete a file's line to have
it fed again.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
from pathlib import Path
from typing import Any

from ._files import opened

__all__ = ["Manifest"]

logger = logging.getLogger(__name__)


class Manifest:
    """The set of file names already fed, backed by a JSON Lines file at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = {}

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    async def load(self) -> None:
        """Read the manifest (replacing what is in memory); a missing file is empty."""
        entries: dict[str, dict[str, Any]] = {}
        try:
            async with opened(self.path, "r", encoding="utf-8", errors="replace") as file:
                # One short line per file fed: small.
                text = await asyncio.get_running_loop().run_in_executor(None, file.read)
        except FileNotFoundError:
            text = ""
        for number, line in enumerate(text.splitlines(), start=1):
            entry = _parse(line)
            if entry is not None:
                entries[entry["file"]] = entry
            elif line.strip():
                logger.warning("%s:%d: ignoring a damaged line", self.path, number)
        self.entries = entries

    def add(
        self, name: str, *, size: int, mtime_ns: int, status: str, error: str | None = None
    ) -> None:
        """Record a file as fed; durable (fsynced) when this returns. Logs if it cannot.

        Synchronous on purpose: one short line per file, written the moment the file's
        last row is committed, with no await for a stopping pipeline to cut short.
        """
        entry: dict[str, Any] = {
            "file": name,
            "status": status,
            "size": size,
            "mtime_ns": mtime_ns,
            "at": datetime.datetime.now(datetime.UTC).isoformat(),
        }
        if error is not None:
            entry["error"] = error
        self.entries[name] = entry
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        try:
            with open(self.path, "a", encoding="utf-8") as file:
                file.write(line)
                file.flush()
                os.fsync(file.fileno())
        except OSError as exc:
            logger.error("%s: cannot record %r as fed: %s", self.path, name, exc)


def _parse(line: str) -> dict[str, Any] | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        return None
    return entry
