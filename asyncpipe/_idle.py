"""The continuous mode's idle watch: stop a pipeline that has had nothing to do for a while."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from ._metrics import NodeStats

__all__ = ["watch_idle"]

logger = logging.getLogger(__name__)


async def watch_idle(
    timeout: float,
    stats: Iterable[NodeStats],
    queued: Callable[[], int],
    stop: Callable[[], None],
) -> None:
    """Call ``stop()`` once no node has received a message for ``timeout`` seconds while
    nothing was queued (``queued()``) or being handled. Idle time counts from the call."""
    every = list(stats)

    def activity() -> int:
        return sum(s.received for s in every)

    def busy() -> bool:
        return any(s.busy for s in every) or queued() > 0

    last_activity = time.monotonic()
    while True:
        seen = activity()
        await asyncio.sleep(max(0.0, last_activity + timeout - time.monotonic()))
        if activity() != seen or busy():
            last_activity = time.monotonic()
            continue
        if time.monotonic() - last_activity >= timeout:
            logger.info("pipeline idle for %.1fs: stopping", timeout)
            stop()
            return
