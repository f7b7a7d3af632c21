"""A served service's behaviours: unary batches and streams, on top of
:meth:`IngestServer.handle`.

A stream open when the server starts stopping is ended ``UNAVAILABLE``, once the batches
already read are answered. Ending it while the client is still writing would make the
client's next write fail, and ``grpc.aio``'s client then reports ``INTERNAL: Internal
error from Core`` instead of the status the server sent (grpc/grpc#36066). So the
server keeps reading for a short while, answering every further batch ``UNAVAILABLE``
without taking it, until the client half-closes or has been quiet for
:data:`STREAM_QUIET` seconds -- at most until the stop's grace ends (a stream is a call in
flight): a client that stops writing at its first refusal then always sees the
``UNAVAILABLE`` status, even on a host so loaded that it reads its replies late.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from ._codec import Malformed
from ._routes import Route
from ._service import Method
from ._stats import counted_unary
from ._status import Refused

if TYPE_CHECKING:
    from ._server import IngestServer

__all__ = ["STREAM_LINGER", "STREAM_QUIET", "Servicer"]

#: Seconds of silence after which a stream being ended is ended.
STREAM_QUIET = 1.0
#: Longest a stream being ended keeps reading (and refusing) what its client sends, when
#: the stop has no grace period.
STREAM_LINGER = 2.0

Context = grpc.aio.ServicerContext[Any, Any]


class Servicer:
    """The service's behaviours; requests come decoded, or as :class:`Malformed`."""

    def __init__(self, server: IngestServer) -> None:
        self._server = server

    def behaviour(self, method: Method) -> Callable[[Any, Context], Awaitable[Any]]:
        """The coroutine function answering ``method``'s calls."""
        server = self._server
        if method.streaming:

            async def stream(requests: AsyncIterator[Any], context: Context) -> None:
                with server.calls.call():
                    await _Stream(server, method, context).run(requests)

            return stream

        async def unary(request: Any, context: Context) -> Any:
            return await self._unary(method, request, context)

        return counted_unary(unary, server.stats.methods[method.name], method)

    async def _unary(self, method: Method, batch: Any, context: Context) -> Any:
        server = self._server
        with server.calls.call():
            try:
                if isinstance(batch, Malformed):
                    server.malformed.report(context.peer(), batch)
                    raise Refused(grpc.StatusCode.INVALID_ARGUMENT, batch.reason)
                if method.route is None:
                    raise Refused(
                        grpc.StatusCode.UNIMPLEMENTED, f"this server does not serve {method.name}"
                    )
                return await server.handle(
                    method.route, method.reply, batch, context.time_remaining()
                )
            except Refused as refused:
                await context.abort(refused.code, refused.message)
                raise AssertionError("unreachable: abort() raises") from None


class _Stream:
    """One stream call: batches answered concurrently (up to the server's
    ``stream_window``), each reply written as soon as it is ready."""

    def __init__(self, server: IngestServer, method: Method, context: Context) -> None:
        self._server = server
        self._method = method
        self._context = context
        self._stats = server.stats.methods[method.name]
        self._window = asyncio.Semaphore(server.stream_window)
        self._writing = asyncio.Lock()
        self._answering: set[asyncio.Task[None]] = set()
        self._reading: asyncio.Future[Any] | None = None  # a read while refusing

    async def run(self, request_iterator: AsyncIterator[Any]) -> None:
        requests = aiter(request_iterator)
        closing = asyncio.ensure_future(self._server.closing.wait())
        following: asyncio.Future[Any] | None = None
        try:
            while True:
                following = asyncio.ensure_future(anext(requests))
                await asyncio.wait([following, closing], return_when=asyncio.FIRST_COMPLETED)
                if not following.done():
                    break  # the server is stopping; `following` is still being read
                read, following = following, None
                try:
                    request = read.result()
                except StopAsyncIteration:
                    break
                await self._window.acquire()
                task = asyncio.create_task(self._answer(request), name="asyncpipe:ingest:stream")
                self._answering.add(task)
                task.add_done_callback(self._answering.discard)
            refused = 0
            if following is not None:
                # Read (and refuse) while the batches taken are answered, so the client's
                # writes never wait on a server that stopped reading.
                refusing = asyncio.create_task(
                    self._refuse_the_rest(requests, following),
                    name="asyncpipe:ingest:stream:refusing",
                )
                following = None
                try:
                    await self._answer_all()
                    refused, following = await refusing
                finally:
                    refusing.cancel()
            else:
                await self._answer_all()
            if closing.done():
                await self._context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    "the server is shutting down: this stream takes no more batches "
                    f"({refused} refused after the stop began); send them again elsewhere",
                )
        finally:
            closing.cancel()
            if following is not None:
                following.cancel()
            for task in self._answering:
                task.cancel()

    async def _answer_all(self) -> None:
        while self._answering:
            done, _ = await asyncio.wait(self._answering, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a failed write ends the call

    async def _refuse_the_rest(
        self, requests: AsyncIterator[Any], following: asyncio.Future[Any]
    ) -> tuple[int, asyncio.Future[Any] | None]:
        """Answer ``UNAVAILABLE`` to what the client still sends (see the module
        docstring); returns how many batches that was, and the read still pending (None:
        the client half-closed), cancelled only once the call has its status."""
        self._reading = following
        try:
            return await self._refuse(requests)
        except BaseException:
            if self._reading is not None:
                self._reading.cancel()
            raise

    async def _refuse(self, requests: AsyncIterator[Any]) -> tuple[int, asyncio.Future[Any] | None]:
        following = self._reading
        assert following is not None
        loop = asyncio.get_running_loop()
        until = self._server.closing_deadline or loop.time() + STREAM_LINGER
        refused = 0
        while True:
            left = min(STREAM_QUIET, until - loop.time())
            if left <= 0:
                return refused, following
            done, _ = await asyncio.wait([following], timeout=left)
            if not done:
                if self._answering:
                    continue  # quiet, but batches taken are still being answered
                return refused, following  # quiet: the client has stopped sending
            try:
                request = following.result()
            except StopAsyncIteration:
                return refused, None
            refused += 1
            following = self._reading = asyncio.ensure_future(anext(requests))
            refusal = self._refusal(
                request, grpc.StatusCode.UNAVAILABLE, "the server is shutting down"
            )
            self._stats.replied(refusal, 0.0)
            await self._write(refusal)

    async def _answer(self, request: Any) -> None:
        try:
            started = time.perf_counter()
            reply = await self._one(request)
            self._stats.replied(reply, time.perf_counter() - started)
            await self._write(reply)
        finally:
            self._window.release()

    async def _write(self, response: Any) -> None:
        async with self._writing:  # grpc.aio takes one write at a time
            await self._context.write(response)

    async def _one(self, request: Any) -> Any:
        server = self._server
        # Any: recent protobuf stubs type Message() without field keywords.
        reply: Callable[..., Any] = self._method.reply
        if isinstance(request, Malformed):
            server.malformed.report(self._context.peer(), request)
            return reply(success=False, message=f"INVALID_ARGUMENT: {request.reason}")
        which = request.WhichOneof(self._method.oneof)
        if which is None:
            return reply(success=False, message="INVALID_ARGUMENT: the request holds no batch")
        try:
            route = self._method.members[which]
            if route is None:
                raise Refused(
                    grpc.StatusCode.UNIMPLEMENTED, f"this server takes no {which} batches"
                )
            return await server.handle(
                route, self._method.reply, getattr(request, which), self._context.time_remaining()
            )
        except Refused as refused:
            return self._refusal(request, refused.code, refused.message)

    def _refusal(self, request: Any, code: grpc.StatusCode, message: str) -> Any:
        """The reply to a stream's batch refused as a whole."""
        # Any: recent protobuf stubs type Message() without field keywords.
        reply: Callable[..., Any] = self._method.reply
        text = f"{code.name}: {message}"
        which = None if isinstance(request, Malformed) else request.WhichOneof(self._method.oneof)
        route: Route | None = None if which is None else self._method.members[which]
        if which is None or route is None:
            return reply(success=False, message=text)
        batch = getattr(request, which)
        return reply(
            success=False,
            batch_id=getattr(batch, route.batch_id),
            items_received=len(getattr(batch, route.items)),
            message=text,
        )
