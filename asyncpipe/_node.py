"""One node at run time: pull from the inbox, call the handler, emit downstream.

Messages travel as ``(payload, receipt)`` pairs. For a message with a receipt, a node
``fork``s the receipt once per copy it sends downstream *before* it ``settle``s the copy it
consumed, so the receipt's count of messages in flight cannot reach zero early.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import traceback
import types
from collections.abc import Awaitable, Callable
from typing import Any

from ._channel import EMPTY as _EMPTY
from ._channel import Channel, EndOfStream
from ._deadletter import DeadLetter
from ._errors import ChannelClosed, HandlerError, HandlerSetupError
from ._graph import ErrorPolicy, HandlerNode
from ._handler import (
    Adapted,
    Kind,
    NotifyingRejections,
    Rejection,
    _rejections,
    collect_rejections,
)
from ._isolation import Part, bisect
from ._metrics import NodeStats
from ._offload import OffloadedHandler, WorkerPool
from ._receipt import Outcome, Receipt, Tracked, item_count
from ._tasks import gather_or_first_error

__all__ = ["Envelope", "NodeRuntime"]

logger = logging.getLogger(__name__)

Envelope = tuple[Any, Receipt | None]
_STREAMED: Any = object()  # a generator's outputs were emitted while it ran
DeadLetterWriter = Callable[[DeadLetter, Receipt | None], Awaitable[None]]
Emit = Callable[[Any, Receipt | None], Awaitable[None]]
_SOURCE_CLOSE_TIMEOUT = 10.0  # seconds a source's aclose() may take


class _OutputClosed(ChannelClosed):
    """A dependent's channel refused an output: the pipeline is being torn down. Raised by
    the runtime only; a handler that raises :class:`ChannelClosed` has failed, like any
    handler that raises."""


def _output_closed(exc: ChannelClosed) -> _OutputClosed:
    error = _OutputClosed(str(exc))
    error.__cause__ = exc
    return error


class NodeRuntime:
    """Runs one :class:`HandlerNode` inside a pipeline."""

    def __init__(
        self,
        node: HandlerNode,
        *,
        inbox: Channel[Envelope] | None,
        outputs: list[Channel[Envelope]],
        workers: int,
        pool: WorkerPool | None,
        dead_letter: DeadLetterWriter,
        track: Callable[[Receipt], None] = lambda receipt: None,
    ) -> None:
        self.node = node
        self.name = node.name
        self.inbox = inbox
        self.outputs = outputs
        self.workers = workers
        self.terminal = not outputs
        self.stats = NodeStats()
        self._pool = pool
        self._dead_letter = dead_letter
        self._track = track
        handler = node.handler
        self._handler: Adapted | None = handler
        self._offloaded = (
            OffloadedHandler.prepare(node.name, handler)
            if node.cpu and handler is not None
            else None
        )
        if self._offloaded is not None and pool is not None:
            pool.add(self._offloaded)
        self._streams_on_loop = handler is not None and handler.streams and pool is None
        self._source_task: asyncio.Task[Any] | None = None
        self._source_pulling = False
        self._source_stopping = False

    # -- task bodies -----------------------------------------------------------------------

    async def run(self) -> None:
        """Process the inbox until it is closed and drained, then close the outputs."""
        try:
            if self.workers == 1:
                await self._serial()
            elif self.node.ordered:
                await self._ordered()
            else:
                async with asyncio.TaskGroup() as group:
                    for i in range(self.workers):
                        group.create_task(self._serial(), name=f"asyncpipe:{self.name}:{i}")
            await self._finish()
        except BaseException:
            # This node will take nothing more: make whoever sends to it fail fast.
            if self.inbox is not None:
                self.inbox.abort()
            raise
        finally:
            for channel in self.outputs:
                channel.close_sender()

    async def _finish(self) -> None:
        """Emit what the handler's ``finish()`` returns, once the input has ended."""
        handler = self._handler
        finish = None if handler is None or self.node.cpu else getattr(handler.obj, "finish", None)
        if finish is None:
            return
        rejections = collect_rejections()  # what finish() rejects is this node's dead letter
        try:
            result = finish()
            if inspect.isasyncgen(result):
                async for item in result:
                    await self._emit_finished(item, rejections)
            elif inspect.isgenerator(result):
                for item in result:
                    await self._emit_finished(item, rejections)
            else:
                if inspect.isawaitable(result):
                    result = await result
                await self._emit_finished(result, rejections)
        except _OutputClosed:
            raise
        except Exception as exc:
            await self._failed(exc, None, None, attempts=1)
        finally:
            if rejections:
                await self._reject(rejections, None)

    async def _emit_finished(self, item: Any, rejections: list[Rejection]) -> None:
        if rejections:
            await self._reject(rejections, None)
        if item is not None and not self.terminal:
            await self.emit(item, None)

    def stop_source(self) -> None:
        """Stop a source node gracefully: no more items are pulled; one already pulled is
        still delivered to every dependent."""
        self._source_stopping = True
        if self._source_task is not None and self._source_pulling:
            self._source_task.cancel()

    async def feed(self, source_factory: Callable[[], Any]) -> None:
        """Emit every item of a source node's iterator, then close the outputs.

        A source may call :func:`asyncpipe.reject` for input it cannot turn into a message
        (a malformed line, say): that becomes a dead letter and the source goes on. An item
        yielded as :class:`asyncpipe.Tracked` travels with its receipt, like a submitted one.
        """
        self._source_task = asyncio.current_task()
        # The source iterates in this task's context; what it rejects is written at once,
        # even while it waits for its next item (a trigger may wait a long time).
        rejections = NotifyingRejections()
        collect_rejections(rejections)
        source_done = asyncio.Event()
        flusher = asyncio.create_task(
            self._flush_rejections(rejections, source_done),
            name=f"asyncpipe:{self.name}:rejections",
        )
        source: Any = None
        outputs = self.outputs
        stats = self.stats
        try:
            source = source_factory()
            while not self._source_stopping:
                self._source_pulling = True
                try:
                    item = await anext(source)
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    task = self._source_task
                    if self._source_stopping and task is not None and task.uncancel() == 0:
                        break  # stop_source() interrupted the wait for the next item
                    raise
                finally:
                    self._source_pulling = False
                if rejections:
                    await self._reject(rejections, None)
                stats.received += 1
                # emit() inlined: a source's per-item path is as hot as a stage's.
                envelope: Envelope
                if type(item) is Tracked:
                    payload, receipt = item
                    self._track(receipt)
                    receipt.fork(len(outputs))
                    envelope = (payload, receipt)
                else:
                    envelope = (item, None)
                try:
                    for channel in outputs:
                        if not channel.put_nowait(envelope):
                            await channel.put(envelope)
                except ChannelClosed as exc:
                    raise _output_closed(exc) from None
                stats.emitted += 1
            if rejections:
                await self._reject(rejections, None)
        except _OutputClosed:
            raise
        except Exception as exc:
            if rejections:
                await self._reject(rejections, None)
            await self._failed(exc, None, None, attempts=1)
        finally:
            try:
                await self._close_source(source)
            finally:
                # Not cancelled: a write under way has taken its letters off the list, and
                # the source's close may have rejected more.
                source_done.set()
                rejections.arrived.set()
                try:
                    await asyncio.wait([flusher])
                finally:
                    flusher.cancel()  # only if this task was cancelled while waiting
                    for channel in self.outputs:
                        channel.close_sender()

    async def _close_source(self, source: Any) -> None:
        """Close the source's iterator; a close that fails or hangs is a dead letter of the
        node (and logged), not a failure of the run: what it produced has been sent."""
        aclose = getattr(source, "aclose", None)
        if aclose is None:
            return
        try:
            async with asyncio.timeout(_SOURCE_CLOSE_TIMEOUT):
                await aclose()
        except Exception as exc:
            hung = isinstance(exc, TimeoutError) and not str(exc)
            reason = (
                f"did not close within {_SOURCE_CLOSE_TIMEOUT:g} s"
                if hung
                else f"failed to close: {type(exc).__name__}: {exc}"
            )
            logger.error("node %r: source %s", self.name, reason, extra={"node": self.name})
            letter = DeadLetter(
                node=self.name,
                error_type="SourceCloseTimeout" if hung else type(exc).__qualname__,
                error_message=f"source {reason}",
                payload=None,
                traceback=None if hung else "".join(traceback.format_exception(exc)),
            )
            self.stats.dead_letters += 1
            await self._dead_letter(letter, None)

    async def _flush_rejections(
        self, rejections: NotifyingRejections, source_done: asyncio.Event
    ) -> None:
        """Write what the source rejects as it comes; return once the source is done and
        everything it rejected is written."""
        while True:
            await rejections.arrived.wait()
            rejections.arrived.clear()  # an append after this sets it again
            if rejections:
                await self._reject(rejections, None)
            if source_done.is_set() and not rejections:
                return

    async def _serial(self) -> None:
        assert self.inbox is not None
        collect_rejections()  # this task's rejection list, reused message after message
        handler = self._handler
        if handler is None or not (self._offloaded or self.node.parallel or handler.streams):
            return await self._serial_fast()
        get = self.inbox.get
        process = self._process
        while True:
            try:
                payload, receipt = await get()
            except EndOfStream:
                return
            outputs = await process(payload, receipt, self.emit)
            if outputs is not None:
                await self._emit_settle(outputs, receipt)

    async def _serial_fast(self) -> None:
        # The loop for the common node: one output per message from a function or
        # coroutine on the event loop. It is _process + _emit_settle inlined, because
        # per-message overhead is what limits a chain of light stages. Anything unusual
        # (an error, a rejection) goes back to the general code.
        inbox = self.inbox
        assert inbox is not None
        handler = self._handler
        call = handler.call if handler is not None else None
        is_async = handler is not None and handler.kind is Kind.ASYNC
        rejections = _rejections.get()
        assert rejections is not None
        stats = self.stats
        terminal = self.terminal
        outputs = self.outputs
        fan = len(outputs)
        clock = time.perf_counter
        while True:
            envelope = inbox.get_nowait(_EMPTY)
            if envelope is _EMPTY:
                try:
                    envelope = await inbox.get()
                except EndOfStream:
                    return
            payload, receipt = envelope
            stats.received += 1
            stats.busy += 1
            # Time the first messages and then one in 16: two clock reads per message are
            # a visible share of a light stage, and recent percentiles need no more.
            timed = stats.received < 256 or not stats.received & 15
            started = clock() if timed else 0.0
            try:
                if call is None:
                    result = payload
                elif is_async:
                    result = await call(payload)
                else:
                    result = call(payload)
                    if type(result) is types.CoroutineType:
                        result = await result
            except (Exception, asyncio.CancelledError) as caught:
                stats.busy -= 1
                failure = caught if isinstance(caught, Exception) else _not_ours(caught)
                more = await self._process(payload, receipt, self.emit, failure)
                if more is not None:
                    await self._emit_settle(more, receipt)
                continue
            except BaseException:
                stats.busy -= 1
                raise
            stats.busy -= 1
            if timed:
                stats.observe(clock() - started)
            if rejections:
                rejected = len(rejections)
                await self._reject(rejections, receipt)
                more = self._outputs_of(result, payload, receipt, rejected)
                if more is not None:
                    await self._emit_settle(more, receipt)
                continue
            if terminal:
                stats.committed += 1
                if receipt is not None:
                    receipt.settle(Outcome.COMMITTED, payload)
                continue
            if result is None:
                stats.filtered += 1
                if receipt is not None:
                    receipt.settle(Outcome.FILTERED, payload)
                continue
            if receipt is not None:
                receipt.fork(fan)
            envelope = (result, receipt)
            try:
                for channel in outputs:
                    if not channel.put_nowait(envelope):
                        await channel.put(envelope)
            except ChannelClosed as exc:
                raise _output_closed(exc) from None
            stats.emitted += 1
            if receipt is not None:
                receipt.settle(None)

    async def _ordered(self) -> None:
        # Up to `workers` messages are processed concurrently by per-message tasks; this
        # task takes them in arrival order and emits their outputs in that order. A
        # generator's outputs stream through a bounded channel of their own message, so
        # one message that expands into millions of outputs is never held whole.
        assert self.inbox is not None
        inbox = self.inbox
        running = asyncio.Semaphore(self.workers)
        streams = self._streams_on_loop
        in_order: Channel[tuple[asyncio.Task[list[Any] | None], Receipt | None, Any]]
        in_order = Channel(self.workers, f"{self.name}:in-order")

        async def dispatch(group: asyncio.TaskGroup) -> None:
            try:
                async for payload, receipt in inbox:
                    await running.acquire()
                    streamed = Channel[Envelope](self.node.capacity, self.name) if streams else None
                    task = group.create_task(
                        self._process_isolated(payload, receipt, running, streamed),
                        name=f"asyncpipe:{self.name}:message",
                    )
                    await in_order.put((task, receipt, streamed))
            finally:
                in_order.close()

        async with asyncio.TaskGroup() as group:
            group.create_task(dispatch(group), name=f"asyncpipe:{self.name}:dispatch")
            async for task, receipt, streamed in in_order:
                if streamed is not None:
                    async for envelope in streamed:
                        await self._forward(envelope)
                outputs = await task
                if outputs is not None:
                    await self._emit_settle(outputs, receipt)

    async def _process_isolated(
        self,
        payload: Any,
        receipt: Receipt | None,
        running: asyncio.Semaphore,
        streamed: Channel[Envelope] | None,
    ) -> list[Any] | None:
        fan = len(self.outputs)

        async def emit(item: Any, receipt: Receipt | None) -> None:
            # Forked now, sent on by _ordered (_forward): the message's own settle may
            # come before its outputs leave this node, never before they are counted.
            if receipt is not None:
                receipt.fork(fan)
            assert streamed is not None
            await streamed.put((item, receipt))

        try:
            collect_rejections()
            return await self._process(payload, receipt, None if streamed is None else emit)
        finally:
            running.release()
            if streamed is not None:
                streamed.close()

    # -- processing one message ------------------------------------------------------------

    async def _process(
        self,
        payload: Any,
        receipt: Receipt | None,
        emit: Emit | None,
        failure: Exception | None = None,
    ) -> list[Any] | None:
        """Handle one message with retries and the error policy.

        Returns the outputs still to emit, or None when the message already reached its end
        (committed by a terminal node, filtered, dead-lettered, skipped); in that case its
        receipt has been settled. With ``emit``, generator outputs are given to it as they
        are produced and ``[]`` is returned. ``failure`` is the error of a first
        attempt already made (by the fast loop), to be handled as such.
        """
        stats = self.stats
        if failure is None:
            stats.received += 1
        stats.busy += 1
        started = time.perf_counter()
        attempts = 0
        rejections = _rejections.get()
        assert rejections is not None
        try:
            while True:
                attempts += 1
                emitted = 0
                rejections.clear()
                try:
                    if failure is not None:
                        first: Exception = failure
                        failure = None
                        raise first
                    if self._handler is None:
                        result: Any = payload
                    elif self._streams_on_loop:
                        result = []
                        async for out in self._iterate(payload):
                            if emit is not None:
                                emitted += 1
                                await emit(out, receipt)
                            else:
                                result.append(out)
                        if emit is not None:
                            result = _STREAMED if emitted else None
                    elif self.node.parallel:
                        result = await self._call_chunks(payload, rejections)
                    else:
                        result = await self._call(payload, rejections)
                    break
                except (HandlerSetupError, _OutputClosed):
                    raise  # not this message's fault: the node cannot run, or is torn down
                except (Exception, asyncio.CancelledError) as caught:
                    exc = caught if isinstance(caught, Exception) else _not_ours(caught)
                    stats.errors += 1
                    if emitted or attempts > self.node.retries:
                        rejections.clear()  # the whole message is dead: forget its rejections
                        if not emitted and self._isolates(payload):
                            return await self._isolate(exc, payload, receipt, attempts)
                        await self._failed(exc, payload, receipt, attempts)
                        return None
                    stats.retries += 1
                    await self._backoff(exc, attempts)
            rejected = len(rejections)
            if rejected:
                await self._reject(rejections, receipt)
            return self._outputs_of(result, payload, receipt, rejected)
        finally:
            stats.busy -= 1
            stats.observe(time.perf_counter() - started)

    def _outputs_of(
        self, result: Any, payload: Any, receipt: Receipt | None, rejected: int
    ) -> list[Any] | None:
        if self.terminal:
            self.stats.committed += 1
            if receipt is not None:
                # Items this sink rejected were counted as dead letters, not as committed.
                receipt.settle(Outcome.COMMITTED, items=max(0, item_count(payload) - rejected))
            return None
        if result is _STREAMED:
            return []
        streams = self._handler is not None and self._handler.streams
        if result is None or (streams and not result):
            self.stats.filtered += 1
            if receipt is not None:
                receipt.settle(Outcome.FILTERED, items=max(0, item_count(payload) - rejected))
            return None
        return list(result) if streams else [result]

    # -- poison isolation --------------------------------------------------------------------

    def _isolates(self, payload: Any) -> bool:
        return self.node.isolate_failures and type(payload) is list and len(payload) > 1

    async def _isolate(
        self, exc: Exception, payload: list[Any], receipt: Receipt | None, attempts: int
    ) -> list[Any] | None:
        """Handle a failed list message in parts (see ``_isolation``); return its outputs
        like :meth:`_process` does."""
        logger.warning(
            "node %r: a %d-item message failed after %d attempt(s) (%s: %s); handling it in "
            "parts to find the failing items",
            self.name,
            len(payload),
            attempts,
            type(exc).__name__,
            exc,
            extra={"node": self.name},
        )
        failures = 0

        async def failed(error: Exception, item: Any, index: int) -> None:
            nonlocal failures
            failures += 1
            await self._item_failed(error, item, index, receipt, attempts)

        parts = await bisect(payload, self._call_part, failed)
        rejected = failures
        for part in parts:
            if part.rejections:
                rejected += len(part.rejections)
                await self._reject([_shift(r, part.offset) for r in part.rejections], receipt)
        if not parts:
            if receipt is not None:
                receipt.settle(None)  # every item has its own dead letter (or skip)
            return None
        combined = _combine(parts, self._handler is not None and self._handler.streams)
        if combined is _SEPARATE:
            if self.terminal:
                return self._outputs_of(None, payload, receipt, rejected)
            return [part.result for part in parts if part.result is not None]
        return self._outputs_of(combined, payload, receipt, rejected)

    async def _call_part(self, part: list[Any]) -> tuple[Any, list[Rejection]]:
        rejections: list[Rejection] = []
        token = _rejections.set(rejections)
        try:
            if self._streams_on_loop:
                result: Any = [out async for out in self._iterate(part)]
            else:
                result = await self._call(part, rejections)
        except asyncio.CancelledError as exc:
            raise _not_ours(exc) from None
        finally:
            _rejections.reset(token)
        return result, rejections

    async def _item_failed(
        self, exc: Exception, item: Any, index: int, receipt: Receipt | None, attempts: int
    ) -> None:
        """One item of a message failed on its own: dead-letter (or skip) just that item."""
        if self.node.on_error is ErrorPolicy.SKIP:
            logger.warning(
                "node %r: skipped item %d: %s: %s",
                self.name,
                index,
                type(exc).__name__,
                exc,
                extra={"node": self.name},
            )
            self.stats.skipped += 1
            if receipt is not None:
                receipt.record(Outcome.SKIPPED, item, items=1)
            return
        letter = DeadLetter.from_exception(
            self.name,
            exc,
            item,
            attempts=attempts,
            receipt_id=receipt.id if receipt else None,
            origin=receipt.origin if receipt else None,
            index=index,
        )
        logger.warning(
            "node %r: dead-lettered item %d: %s: %s",
            self.name,
            index,
            letter.error_type,
            letter.error_message,
            extra={"node": self.name},
        )
        self.stats.dead_letters += 1
        await self._dead_letter(letter, receipt)
        if receipt is not None:
            receipt.record(Outcome.DEAD_LETTERED, item, items=1)

    async def _call(self, data: Any, rejections: list[Rejection]) -> Any:
        handler = self._handler
        assert handler is not None
        if self._offloaded is not None:
            assert self._pool is not None
            result, remote = await self._pool.call(self._offloaded, data)
            rejections.extend(remote)
            return result
        if handler.kind is Kind.ASYNC:
            return await handler.call(data)
        result = handler.call(data)
        if type(result) is types.CoroutineType:  # a plain function that returned a coroutine
            result = await result
        return result

    async def _call_chunks(self, data: Any, rejections: list[Rejection]) -> list[Any] | None:
        if not isinstance(data, list | tuple):
            raise TypeError(
                f"node {self.name!r} has parallel=True and expects list messages, "
                f"got {type(data).__name__}"
            )
        size = -(-len(data) // self.node.chunks) or 1
        bounds = [(i, data[i : i + size]) for i in range(0, len(data), size)] or [(0, data)]

        async def one(offset: int, chunk: Any) -> tuple[Any, list[Rejection]]:
            mine = collect_rejections()
            result = await self._call(chunk, mine)
            return result, [_shift(r, offset) for r in mine]

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

    async def _iterate(self, payload: Any) -> Any:
        handler = self._handler
        assert handler is not None
        if handler.kind is Kind.ASYNC_GEN:
            async for out in handler.call(payload):
                yield out
        else:
            for out in handler.call(payload):
                yield out

    async def _backoff(self, exc: Exception, attempt: int) -> None:
        delay = min(self.node.backoff * 2 ** (attempt - 1), self.node.max_backoff)
        logger.info(
            "node %r: %s: %s; retry %d/%d in %.3fs",
            self.name,
            type(exc).__name__,
            exc,
            attempt,
            self.node.retries,
            delay,
            extra={"node": self.name},
        )
        if delay:
            await asyncio.sleep(delay)

    # -- endings ---------------------------------------------------------------------------

    async def _failed(
        self, exc: Exception, payload: Any, receipt: Receipt | None, attempts: int
    ) -> None:
        label = self._handler.label if self._handler else "source"
        if self.node.on_error is ErrorPolicy.FAIL:
            error = HandlerError(self.name, f"{label} raised {type(exc).__name__}: {exc}")
            raise error from exc
        if self.node.on_error is ErrorPolicy.SKIP:
            logger.warning(
                "node %r: skipped a message after %d attempt(s): %s: %s",
                self.name,
                attempts,
                type(exc).__name__,
                exc,
                extra={"node": self.name},
            )
            self.stats.skipped += 1
            if receipt is not None:
                receipt.settle(Outcome.SKIPPED, payload)
            return
        letter = DeadLetter.from_exception(
            self.name,
            exc,
            payload,
            attempts=attempts,
            receipt_id=receipt.id if receipt else None,
            origin=receipt.origin if receipt else None,
        )
        logger.warning(
            "node %r: dead-lettered a message after %d attempt(s): %s: %s",
            self.name,
            attempts,
            letter.error_type,
            letter.error_message,
            extra={"node": self.name},
        )
        self.stats.dead_letters += 1
        await self._dead_letter(letter, receipt)
        if receipt is not None:
            receipt.settle(Outcome.DEAD_LETTERED, payload)

    async def _reject(self, rejections: list[Rejection], receipt: Receipt | None) -> None:
        taken = rejections[:]
        rejections.clear()  # before any await: a concurrent flush must not see these again
        for rejection in taken:
            letter = DeadLetter(
                node=self.name,
                error_type="Rejected",
                error_message=rejection.reason,
                payload=rejection.payload,
                index=rejection.index,
                receipt_id=receipt.id if receipt else None,
                origin=rejection.origin or (receipt.origin if receipt else None),
            )
            self.stats.dead_letters += 1
            await self._dead_letter(letter, receipt)
            if receipt is not None:
                receipt.record(Outcome.DEAD_LETTERED, rejection.payload, items=1)

    # -- emitting --------------------------------------------------------------------------

    async def emit(self, item: Any, receipt: Receipt | None) -> None:
        """Send one output to every dependent (waiting while any is full)."""
        outputs = self.outputs
        if receipt is not None:
            receipt.fork(len(outputs))
        envelope = (item, receipt)
        try:
            for channel in outputs:
                if not channel.put_nowait(envelope):
                    await channel.put(envelope)
        except ChannelClosed as exc:
            raise _output_closed(exc) from None
        self.stats.emitted += 1

    async def _forward(self, envelope: Envelope) -> None:
        """Send an output whose receipt was forked already to every dependent."""
        try:
            for channel in self.outputs:
                if not channel.put_nowait(envelope):
                    await channel.put(envelope)
        except ChannelClosed as exc:
            raise _output_closed(exc) from None
        self.stats.emitted += 1

    async def _emit_settle(self, outputs: list[Any], receipt: Receipt | None) -> None:
        for item in outputs:
            await self.emit(item, receipt)
        if receipt is not None:
            receipt.settle(None)


_SEPARATE: Any = object()  # the parts' results go on as separate messages


def _combine(parts: list[Part], streams: bool) -> Any:
    """The parts' results as one result: a generator's outputs in order; list results
    joined into one list; None if every part was filtered; else :data:`_SEPARATE`."""
    if streams:
        return [out for part in parts for out in part.result]
    results = [part.result for part in parts if part.result is not None]
    if not results:
        return None
    if all(type(result) is list for result in results):
        return [item for result in results for item in result]
    return _SEPARATE


def _shift(rejection: Rejection, offset: int) -> Rejection:
    if rejection.index is None or not offset:
        return rejection
    return Rejection(
        rejection.payload, rejection.reason, rejection.index + offset, rejection.origin
    )


def _not_ours(exc: asyncio.CancelledError) -> Exception:
    """A CancelledError from a handler: re-raise it if this task is being cancelled,
    otherwise it is the handler's failure (e.g. it awaited a future someone cancelled)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise exc
    error = RuntimeError("handler raised CancelledError (the pipeline did not cancel it)")
    error.__cause__ = exc
    return error
