"""Waiting on a few things at once: all of them (:func:`gather_or_first_error`), or the
first of them (:func:`first_done`).

``gather_or_first_error`` runs coroutines together without Python 3.11 TaskGroup's
cancellation leak.
In 3.11, a TaskGroup whose child fails while the parent is already waiting in ``__aexit__``
cancels the parent and never un-cancels it (fixed in 3.12): the calling task then carries a
stray cancellation request, which makes a later, unrelated ``CancelledError`` look like the
caller's own. Where a group's body is empty that happens every time, so those places use
:func:`gather_or_first_error` instead.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Coroutine, Sequence
from typing import Any

__all__ = ["first_done", "gather_or_first_error"]


async def gather_or_first_error(
    coros: Sequence[Coroutine[Any, Any, Any]], name: str = "asyncpipe"
) -> list[Any]:
    """Run ``coros`` concurrently and return their results in order. On the first failure,
    cancel the others, wait for them, and raise it; if the caller is cancelled, cancel them
    all and wait for them before re-raising."""
    if len(coros) <= 1:
        return [await c for c in coros]
    tasks = [asyncio.create_task(c, name=f"{name}:{i}") for i, c in enumerate(coros)]
    for task in tasks:
        # If the caller is cancelled, the errors are not raised: they must still count as
        # seen, or asyncio logs "Task exception was never retrieved" for each.
        task.add_done_callback(_retrieve)
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        pending = [t for t in tasks if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
    errors = [e for t in tasks if not t.cancelled() and (e := t.exception()) is not None]
    if errors:
        raise errors[0]
    return [t.result() for t in tasks]


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def first_done(*awaitables: Awaitable[Any]) -> set[asyncio.Future[Any]]:
    """Wait until the first of ``awaitables`` is done, cancel the others, and return the
    done ones. Coroutines are run as tasks; if the caller is cancelled, those tasks are
    cancelled too (futures the caller passed in are left as they are)."""
    own = [inspect.iscoroutine(a) for a in awaitables]
    futures: list[asyncio.Future[Any]] = [asyncio.ensure_future(a) for a in awaitables]
    try:
        done, _ = await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future, mine in zip(futures, own, strict=True):
            if mine and not future.done():
                future.cancel()
    return done
