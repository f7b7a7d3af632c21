"""Running a coroutine from sync code: uvloop when available, and signal handling for CLIs."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["install_signal_handlers", "loop_factory", "no_running_loop", "run"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def loop_factory(use_uvloop: bool = True) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when uvloop is installed (and wanted), else None (the default)."""
    if not use_uvloop:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def no_running_loop(what: str, advice: str) -> None:
    """Raise RuntimeError ``what ... ; advice`` if an event loop is running in this thread
    (``what`` would start a second one)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        f"{what} runs its own event loop and cannot be called from a running one "
        f"(async code, a notebook); {advice}"
    )


def run(main: Coroutine[Any, Any, T], *, use_uvloop: bool = True, debug: bool | None = None) -> T:
    """Run ``main`` to completion in a new event loop (uvloop when installed)."""
    with asyncio.Runner(debug=debug, loop_factory=loop_factory(use_uvloop)) as runner:
        return runner.run(main)


def install_signal_handlers(
    stop: Callable[[], None], abort: Callable[[], None]
) -> Callable[[], None]:
    """On the running loop, make the first SIGINT/SIGTERM call ``stop`` and the next
    ``abort``. Returns a function that removes the handlers. Does nothing where the loop
    cannot handle signals (not the main thread, or Windows)."""
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        name = signal.Signals(signum).name
        if len(received) == 1:
            logger.warning("%s received: stopping intake and draining (again to abort)", name)
            stop()
        else:
            logger.warning("%s received again: aborting", name)
            abort()

    installed: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        installed.append(sig)

    def remove() -> None:
        for sig in installed:
            loop.remove_signal_handler(sig)

    return remove
