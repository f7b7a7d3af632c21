"""RequestTrigger: a source feeding each new file of a watched directory, exactly once.

``RequestTrigger(node, suffix, watch_dir, poll_interval, max_checks)`` keeps the original's
signature and becomes the source of a producer node::

    scores = HandlerNode(
        "scores", RequestTrigger(lambda path: CsvSource(path, batch_size=500), ".csv", "inbox")
    )

For every new file of ``watch_dir`` whose name ends with ``suffix`` it calls ``node`` with
the file's ``Path`` and emits what that returns (here the file's batches; see ``_fire``);
with ``node=None`` it emits the ``Path`` for a downstream node to read.

**When is a file read?** Only once it is complete. The rule: write the file under a name
that does not match (``scores.csv.part``, or a dot-file ``.scores.csv``) and rename it
into place when done -- a rename is atomic, so a matching name always holds a whole
file. As a safety net for writers that write in place, a file is also left alone until its
size and modification time have stayed the same for ``settle`` seconds (default 0.5).
Names starting with ``.`` are never fed.

**Exactly once.** Every message made from a file travels with one receipt (see
:class:`asyncpipe.Tracked`). Once the whole file has been fed and everything made from it
has reached its end -- committed by the sinks, filtered or dead-lettered -- its name is
appended (and fsynced) to the manifest, a JSON Lines file (default
``watch_dir/.asyncpipe-manifest-<suffix>.jsonl``), and is never fed again, also after a
restart. A file whose handler raised is recorded as ``failed`` and dead-lettered. If the
pipeline stops or dies before that -- while the file is read, or before its last rows
are committed -- the file is not recorded and is fed again, from the start, on the next
run (sinks upsert, so nothing is duplicated); a graceful stop drains, so the files already
fed are committed and recorded. Files are told apart by name: to feed new content, use
a new name.

**Watching.** Changes are noticed through ``watchfiles`` (inotify on Linux) within a few
tens of milliseconds; the directory is also rescanned every ``poll_interval`` seconds (the
safety net for missed events, and the polling fallback when the OS watcher is
unavailable or ``force_polling=True``). If the directory disappears the trigger logs a
warning and waits (watching the parent) for it to reappear; a reappeared directory is a new
one: pending files are forgotten and a manifest inside it is read again.

``max_checks``: stop after that many periodic rescans (about ``max_checks *
poll_interval`` seconds); ``None`` runs until the pipeline stops.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiofiles.os

from .._receipt import Receipt, Tracked
from ._dirwatch import DirectoryChanges
from ._fire import Fired
from ._manifest import Manifest
from ._reject import reject_item

__all__ = ["RequestTrigger"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _File:
    name: str
    size: int
    mtime_ns: int


@dataclass(slots=True)
class _Listing:
    identity: tuple[int, int] | None  # (st_dev, st_ino) of the directory; None: missing
    parent_exists: bool
    files: list[_File] = field(default_factory=list)


@dataclass(slots=True)
class _State:
    identity: tuple[int, int] | None = None
    first_scan: bool = True
    # name -> (size, mtime_ns, loop time since which it has looked like that)
    pending: dict[str, tuple[int, int, float]] = field(default_factory=dict)
    in_flight: set[str] = field(default_factory=set)  # fed, not yet all committed


class RequestTrigger:
    """A source feeding each new ``suffix`` file of ``watch_dir`` to ``node`` once (see
    the module docstring for the rules).

    Args:
        node: the handler called with each file's ``Path``; None emits the ``Path``.
        suffix: the file name ending to match (a string, or a tuple of them).
        watch_dir: the directory to watch (need not exist yet).
        poll_interval: seconds between periodic rescans.
        max_checks: stop after that many periodic rescans (None: never).
        settle: seconds a file's size and mtime must stay unchanged before it is read.
        manifest: path of the manifest file (default inside ``watch_dir``).
        force_polling: do not use the OS watcher; rescan every ``poll_interval``.
    """

    def __init__(
        self,
        node: Any = None,
        suffix: str | Sequence[str] = ".csv",
        watch_dir: str | os.PathLike[str] = ".",
        poll_interval: float = 1.0,
        max_checks: int | None = None,
        *,
        settle: float = 0.5,
        manifest: str | os.PathLike[str] | None = None,
        force_polling: bool = False,
    ) -> None:
        self.suffixes = (suffix,) if isinstance(suffix, str) else tuple(suffix)
        if not self.suffixes or not all(isinstance(s, str) and s for s in self.suffixes):
            raise ValueError(f"RequestTrigger: suffix must be a non-empty string, got {suffix!r}")
        if not poll_interval > 0:
            raise ValueError(f"RequestTrigger: poll_interval must be > 0, got {poll_interval!r}")
        if max_checks is not None and max_checks < 0:
            raise ValueError(f"RequestTrigger: max_checks must be None or >= 0, got {max_checks}")
        if settle < 0:
            raise ValueError(f"RequestTrigger: settle must be >= 0, got {settle!r}")
        self.fired = Fired(node, "RequestTrigger")
        self.watch_dir = Path(watch_dir)
        self.poll_interval = float(poll_interval)
        self.max_checks = max_checks
        self.settle = float(settle)
        self.force_polling = force_polling
        tag = "-".join(s.lstrip(".").replace(os.sep, "_") for s in self.suffixes)
        default = self.watch_dir / f".asyncpipe-manifest-{tag}.jsonl"
        self.manifest_path = Path(manifest) if manifest is not None else default
        self._manifest_inside = self.manifest_path.parent == self.watch_dir

    def __repr__(self) -> str:
        return f"<RequestTrigger {str(self.watch_dir)!r} suffix={self.suffixes}>"

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._run()

    async def _run(self) -> AsyncGenerator[Any, None]:
        loop = asyncio.get_running_loop()
        manifest = Manifest(self.manifest_path)
        changes = DirectoryChanges(self.watch_dir, polling=self.force_polling)
        state = _State()
        await self.fired.setup()
        try:
            await manifest.load()
            checks = 0
            next_check = loop.time() + self.poll_interval
            while True:
                ready, wake_at = await self._scan(state, manifest, changes)
                for file in ready:
                    feed = self._feed(file, state, manifest)
                    async with aclosing(feed):
                        async for message in feed:
                            yield message
                if self.max_checks is not None and checks >= self.max_checks:
                    return
                deadline = next_check if wake_at is None else min(next_check, wake_at)
                await changes.wait(deadline - loop.time())
                now = loop.time()
                if now >= next_check:
                    checks += 1
                    behind = int((now - next_check) // self.poll_interval)
                    next_check += (behind + 1) * self.poll_interval
        finally:
            try:
                await changes.aclose()
            finally:
                await self.fired.teardown()

    async def _scan(
        self, state: _State, manifest: Manifest, changes: DirectoryChanges
    ) -> tuple[list[_File], float | None]:
        """List the directory; return the files ready to feed, and when to look again for
        those still settling."""
        listing = await asyncio.to_thread(_list_directory, self.watch_dir, self.suffixes)
        if listing.identity != state.identity or state.first_scan:
            await self._directory_changed(state, listing, manifest)
            changes.watch(exists=listing.identity is not None, parent_exists=listing.parent_exists)
        now = asyncio.get_running_loop().time()
        ready: list[_File] = []
        wake_at: float | None = None
        listed = set()
        for file in listing.files:
            listed.add(file.name)
            if file.name in manifest or file.name in state.in_flight:
                continue
            seen = state.pending.get(file.name)
            if seen is None or seen[:2] != (file.size, file.mtime_ns):
                seen = state.pending[file.name] = (file.size, file.mtime_ns, now)
            if now - seen[2] >= self.settle:
                ready.append(file)
            else:
                due = seen[2] + self.settle
                wake_at = due if wake_at is None else min(wake_at, due)
        for name in [n for n in state.pending if n not in listed]:
            del state.pending[name]
        ready.sort(key=lambda f: (f.mtime_ns, f.name))
        return ready, wake_at

    async def _directory_changed(
        self, state: _State, listing: _Listing, manifest: Manifest
    ) -> None:
        if listing.identity is None:
            logger.warning("%s: watched directory is missing; waiting for it", self.watch_dir)
        elif not state.first_scan:
            logger.warning("%s: watched directory (re)appeared", self.watch_dir)
            if self._manifest_inside:
                await manifest.load()  # the manifest belongs to the directory's contents
        state.identity = listing.identity
        state.first_scan = False
        state.pending.clear()

    async def _feed(
        self, file: _File, state: _State, manifest: Manifest
    ) -> AsyncGenerator[Any, None]:
        path = self.watch_dir / file.name
        state.pending.pop(file.name, None)
        if not await aiofiles.os.path.isfile(path):
            return  # gone before we got to it: not ours to record
        logger.info("%s: feeding", path)
        receipt = Receipt(str(path), origin=str(path))
        status, error = "done", None
        try:
            outputs = self.fired.outputs(path)
            async with aclosing(outputs):
                async for message in outputs:
                    yield Tracked(message, receipt)
        except Exception as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            logger.warning("%s: failed: %s", path, error, exc_info=True)
            reject_item(str(path), f"{path}: {error}")
        # Reached only when the whole file was handed over (a stop mid-file skips this, so
        # the file is fed again next time). It is recorded once all of it has reached its
        # end in the pipeline; until then it is "in flight" and not fed again. The record is
        # written in the receipt's callback, on the loop (one short fsynced line per file),
        # so no stop can come between the last commit and the record.
        state.in_flight.add(file.name)

        def record(_: Receipt) -> None:
            state.in_flight.discard(file.name)
            manifest.add(
                file.name, size=file.size, mtime_ns=file.mtime_ns, status=status, error=error
            )

        receipt.add_done_callback(record)
        receipt.release()


def _list_directory(directory: Path, suffixes: tuple[str, ...]) -> _Listing:
    """The matching regular files of ``directory`` (run in a thread: it blocks)."""
    try:
        info = os.stat(directory)
        if not stat.S_ISDIR(info.st_mode):
            raise NotADirectoryError(directory)
        listing = _Listing((info.st_dev, info.st_ino), True)
        with os.scandir(directory) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith(".") or not name.endswith(suffixes):
                    continue
                try:
                    found = entry.stat()
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(found.st_mode):
                    listing.files.append(_File(name, found.st_size, found.st_mtime_ns))
        return listing
    except (FileNotFoundError, NotADirectoryError):
        return _Listing(None, directory.parent.is_dir())
