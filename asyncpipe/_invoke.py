"""How a node calls its handler: on the event loop, in chunks, or in a worker process (or on
a Dask cluster).

One attempt at one message; retries and the error policy are ``_attempt``'s.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ._graph import HandlerNode
from ._handler import Adapted, Kind, Rejection, _rejections, collect_rejections
from ._offload import OffloadedHandler, Pool
from ._outputs import STREAMED
from ._tasks import gather_or_first_error

__all__ = ["EmitOne", "Invoker", "not_ours"]

#: Sends one output of the message being handled.
EmitOne = Callable[[Any], Awaitable[None]]


class Invoker:
    """Calls one node's handler (``None``: the identity)."""

    def __init__(self, node: HandlerNode, pool: Pool | None) -> None:
        self.name = node.name
        self.parallel = node.parallel
        self.chunks = node.chunks
        handler = node.handler
        self.handler: Adapted | None = handler
        self.offloaded = (
            OffloadedHandler.prepare(node.name, handler)
            if node.cpu and handler is not None
            else None
        )
        self.pool = pool
        if self.offloaded is not None and pool is not None:
            pool.add(self.offloaded)
        #: A generator run on the loop: its outputs can be sent while it runs.
        self.streams_on_loop = handler is not None and handler.streams and pool is None
        #: The handler's outputs are a sequence of messages (generators, also offloaded).
        self.streams = handler is not None and handler.streams
        #: One result per message from a function or coroutine on the loop: the node's
        #: fast loop can call it directly.
        self.simple = handler is None or not (self.offloaded or node.parallel or handler.streams)

    async def __call__(
        self, payload: Any, rejections: list[Rejection], emit: EmitOne | None
    ) -> Any:
        """Handle ``payload`` once and return the result. A generator's outputs go to
        ``emit`` as they come (the result is then :data:`STREAMED`, or None if it yielded
        nothing); without ``emit`` they are returned as a list. What the handler rejects in
        a worker process is added to ``rejections`` (on the loop it is added directly)."""
        if self.handler is None:
            return payload
        if self.streams_on_loop:
            if emit is None:
                return [out async for out in self.iterate(payload)]
            emitted = False
            async for out in self.iterate(payload):
                emitted = True
                await emit(out)
            return STREAMED if emitted else None
        if self.parallel:
            return await self.call_chunks(payload, rejections)
        return await self.call(payload, rejections)

    async def call_part(self, part: list[Any]) -> tuple[Any, list[Rejection]]:
        """Handle a part of a message on its own (poison isolation): its result, and the
        items it rejected, indexed within the part."""
        rejections: list[Rejection] = []
        token = _rejections.set(rejections)
        try:
            return await self(part, rejections, None), rejections
        except asyncio.CancelledError as exc:
            raise not_ours(exc) from None
        finally:
            _rejections.reset(token)

    async def call(self, data: Any, rejections: list[Rejection]) -> Any:
        handler = self.handler
        assert handler is not None
        if self.offloaded is not None:
            assert self.pool is not None
            result, remote = await self.pool.call(self.offloaded, data)
            rejections.extend(remote)
            return result
        if handler.kind is Kind.ASYNC:
            return await handler.call(data)
        result = handler.call(data)
        if type(result) is types.CoroutineType:  # a plain function that returned a coroutine
            result = await result
        return result

    async def call_chunks(self, data: Any, rejections: list[Rejection]) -> list[Any] | None:
        if not isinstance(data, list | tuple):
            raise TypeError(
                f"node {self.name!r} has parallel=True and expects list messages, "
                f"got {type(data).__name__}"
            )
        size = -(-len(data) // self.chunks) or 1
        bounds = [(i, data[i : i + size]) for i in range(0, len(data), size)] or [(0, data)]

        async def one(offset: int, chunk: Any) -> tuple[Any, list[Rejection]]:
            mine = collect_rejections()
            result = await self.call(chunk, mine)
            return result, [shift(r, offset) for r in mine]

        results = await gather_or_first_error(
            [one(offset, chunk) for offset, chunk in bounds], f"asyncpipe:{self.name}:chunk"
        )
        if all(result is None for result, _ in results):
            for _, chunk_rejections in results:
                rejections.extend(chunk_rejections)
            return None  # every chunk filtered: the message is filtered
        merged: list[Any] = []
        for result, chunk_rejections in results:
            rejections.extend(chunk_rejections)
            if result is None:
                continue
            if not isinstance(result, list | tuple):
                raise TypeError(
                    f"node {self.name!r} has parallel=True: its handler must return a list "
                    f"per chunk, got {type(result).__name__}"
                )
            merged.extend(result)
        return merged

    async def iterate(self, payload: Any) -> AsyncIterator[Any]:
        handler = self.handler
        assert handler is not None
        if handler.kind is Kind.ASYNC_GEN:
            async for out in handler.call(payload):
                yield out
        else:
            for out in handler.call(payload):
                yield out


def shift(rejection: Rejection, offset: int) -> Rejection:
    """The rejection with its index moved by ``offset`` (a chunk's or part's position)."""
    if rejection.index is None or not offset:
        return rejection
    return Rejection(
        rejection.payload, rejection.reason, rejection.index + offset, rejection.origin
    )


def not_ours(exc: asyncio.CancelledError) -> Exception:
    """A CancelledError from a handler: re-raise it if this task is being cancelled,
    otherwise it is the handler's failure (e.g. it awaited a future someone cancelled)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise exc
    error = RuntimeError("handler raised CancelledError (the pipeline did not cancel it)")
    error.__cause__ = exc
    return error
