"""What a trigger fires: the handler given as its ``node``, called once per event.

A trigger (:class:`TimerTrigger`, :class:`RequestTrigger`) is a *source*: it goes in a
producer node and emits messages. Its ``node`` argument says what to do at each event (a
tick, a new file):

* ``None``: emit the event itself (a :class:`Tick`, a file's ``Path``), so that the
  nodes downstream do the work -- with their own ``workers``, ``cpu``, ``retries``;
* a handler -- a function (sync or ``async``), a generator function, or a
  :class:`asyncpipe.BaseHandler` -- called with the event (or with nothing, if it takes
  no argument). What it returns is emitted: an *iterator* or *async iterable* (a generator,
  a :class:`CsvSource`) is a stream, each item a message; ``None`` is nothing; anything
  else (a list of records, a dict) is one message. Its ``setup()`` / ``teardown()`` run
  around the trigger's life.

A handler that raises does not stop the trigger: the event becomes a dead letter (with
the error as reason) and the trigger waits for the next one.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterator
from typing import Any

from .._graph import HandlerNode
from .._handler import BaseHandler

__all__ = ["Fired"]

logger = logging.getLogger(__name__)

_TEARDOWN_TIMEOUT = 30.0


class Fired:
    """The handler a trigger calls at each event, adapted (see the module docstring)."""

    def __init__(self, node: Any, trigger: str) -> None:
        if isinstance(node, HandlerNode):
            raise TypeError(
                f"{trigger} fires a handler, not a HandlerNode: pass the handler (or None) "
                f"and make the trigger the source of a node, e.g. "
                f"HandlerNode({node.name!r}, {trigger}(handler, ...))"
            )
        self.obj = node
        self.call: Callable[..., Any] | None
        if node is None:
            self.call = None
        elif isinstance(node, BaseHandler) or (
            not inspect.isroutine(node) and callable(getattr(node, "handle", None))
        ):
            self.call = node.handle
        elif callable(node):
            self.call = node
        else:
            raise TypeError(f"{trigger}: node must be a handler or None, got {node!r}")
        self._with_event = self.call is not None and _takes_an_argument(self.call)

    async def setup(self) -> None:
        if self.call is not None and not inspect.isroutine(self.obj):
            await _call_hook(self.obj, "setup")

    async def teardown(self) -> None:
        if self.call is not None and not inspect.isroutine(self.obj):
            async with asyncio.timeout(_TEARDOWN_TIMEOUT):
                await _call_hook(self.obj, "teardown")

    async def outputs(self, event: Any) -> AsyncGenerator[Any, None]:
        """The messages the handler produces for ``event`` (``event`` itself if none)."""
        if self.call is None:
            yield event
            return
        result = self.call(event) if self._with_event else self.call()
        if inspect.isawaitable(result):
            result = await result
        if result is None:
            return
        if isinstance(result, AsyncIterable):
            iterator = aiter(result)
            try:
                async for item in iterator:
                    yield item
            finally:
                aclose = getattr(iterator, "aclose", None)
                if aclose is not None:
                    await aclose()
        elif isinstance(result, Iterator):
            for item in result:
                yield item
        else:
            yield result


async def _call_hook(obj: Any, name: str) -> None:
    hook = getattr(obj, name, None)
    if hook is not None:
        result = hook()
        if inspect.isawaitable(result):
            await result


def _takes_an_argument(fn: Callable[..., Any]) -> bool:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return True
    return any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        for p in signature.parameters.values()
    )
