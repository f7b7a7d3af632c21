"""A node's loops: pull from the inbox, handle, send downstream -- serially, ordered or
unordered over ``workers`` -- and ``finish()`` once the input has ended.

The pieces a loop uses are elsewhere: calling the handler (``_invoke``), retries and the
error policy (``_attempt``), sending and settling (``_outputs``). Sources are fed by
``_source``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import types
from collections.abc import Awaitable, Callable
from typing import Any

from ._attempt import Attempts, DeadLetterWriter, Failures
from ._channel import EMPTY as _EMPTY
from ._channel import Channel, EndOfStream
from ._errors import ChannelClosed
from ._graph import HandlerNode
from ._handler import Kind, Rejection, _rejections, collect_rejections
from ._invoke import EmitOne, Invoker, not_ours
from ._lanes import dispatch
from ._metrics import NodeStats
from ._offload import Pool
from ._outputs import Envelope, OutputClosed, Outputs, count_dropped
from ._receipt import Receipt

__all__ = ["GROUP", "HandleGroup", "NodeRuntime"]

#: Most messages a sink with ``handle_group`` takes from its inbox at once.
GROUP = 16
#: A sink's ``handle_group(messages)``: handle them as one (all or none stored; raise if
#: none), return each message's rejected items.
HandleGroup = Callable[[list[Any]], Awaitable[list[list[Rejection]]]]


class NodeRuntime:
    """Runs one :class:`HandlerNode` that has an input (every node but a source)."""

    def __init__(
        self,
        node: HandlerNode,
        *,
        inbox: Channel[Envelope],
        outputs: list[Channel[Envelope]],
        pool: Pool | None,
        dead_letter: DeadLetterWriter,
        state_store: Any = None,
    ) -> None:
        self.node = node
        self.name = node.name
        self.inbox = inbox
        self.pool = pool
        self.stats = NodeStats()
        self.outputs = Outputs(outputs, self.stats)
        self.invoke = Invoker(node, pool)  # pickles a cpu handler now: a bad one fails here
        self.failures = Failures(node, self.stats, dead_letter)
        self.attempts = Attempts(node, self.invoke, self.outputs, self.failures)
        #: Where a stateful handler keeps its state (an ``asyncpipe.state.StateStore``).
        self.state_store = state_store

    @property
    def workers(self) -> int:
        """Concurrent handler calls: the node's ``workers=``, or twice its pool's size (a
        Dask cluster's is known once the pool has started)."""
        return self.node.resolved_workers(self.pool.max_workers if self.pool else 1)

    async def run(self) -> None:
        """Process the inbox until it is closed and drained, then close the outputs."""
        try:
            if self.node.stateful is not None:
                # A stateful handler runs its lanes, its commits and its finish() itself.
                await self.node.stateful(self)
            else:
                if self.node.key is not None and self.workers > 1:
                    await self._keyed()
                elif self.workers == 1:
                    grouped = self._group_handler()
                    if grouped is not None:
                        collect_rejections()
                        await self._serial_grouped(self.inbox, grouped)
                    else:
                        await self._serial(self.inbox)
                elif self.node.ordered:
                    await self._ordered()
                else:
                    async with asyncio.TaskGroup() as group:
                        for i in range(self.workers):
                            group.create_task(
                                self._serial(self.inbox), name=f"asyncpipe:{self.name}:{i}"
                            )
                await self._finish()
        except BaseException:
            # This node will take nothing more: make whoever sends to it fail fast.
            self.inbox.abort()
            raise
        finally:
            self.outputs.close()

    async def _keyed(self) -> None:
        # One serial loop per lane; the dispatcher splits each message by key.
        key = self.node.key
        assert key is not None
        lanes = [
            Channel[Envelope](self.node.capacity, f"{self.name}:lane{i}")
            for i in range(self.workers)
        ]
        async with asyncio.TaskGroup() as group:
            group.create_task(
                dispatch(self.inbox, lanes, key, named=False), name=f"asyncpipe:{self.name}:keys"
            )
            for i, lane in enumerate(lanes):
                group.create_task(self._serial(lane), name=f"asyncpipe:{self.name}:lane{i}")

    async def _serial(self, inbox: Channel[Envelope]) -> None:
        collect_rejections()  # this task's rejection list, reused message after message
        if self.invoke.simple:
            return await self._serial_fast(inbox)
        get = inbox.get
        process = self.attempts.process
        send, send_all = self.outputs.send, self.outputs.send_all
        while True:
            try:
                payload, receipt = await get()
            except EndOfStream:
                return
            outputs = await process(payload, receipt, _bound(send, receipt))
            if outputs is not None:
                await send_all(outputs, receipt)

    def _group_handler(self) -> HandleGroup | None:
        """A sink's ``handle_group`` (several messages as one, e.g. one transaction), if
        it has one and runs on the loop."""
        handler = self.node.handler
        if handler is None or not self.invoke.simple or not self.outputs.terminal:
            return None
        group = getattr(handler.obj, "handle_group", None)
        return group if callable(group) else None

    async def _serial_grouped(self, inbox: Channel[Envelope], handle_group: HandleGroup) -> None:
        # One message at a time, except that the messages waiting in the inbox when one
        # is taken are handled together: at most GROUP, and no more than the inbox holds,
        # so that upstream can fill it again while the group is written (a group that
        # empties a full inbox of 2 leaves the writer idle while the next 3 are made). A
        # group is handled whole or not at all: if handle_group raises, its messages go
        # one by one, in order, through the general path (retries, error policy) as if
        # they had come alone.
        process = self.attempts.process
        send_all = self.outputs.send_all
        limit = min(GROUP, self.node.capacity)
        while True:
            envelope = inbox.get_nowait(_EMPTY)
            if envelope is _EMPTY:
                try:
                    envelope = await inbox.get()
                except EndOfStream:
                    return
            group = [envelope]
            while len(group) < limit and (envelope := inbox.get_nowait(_EMPTY)) is not _EMPTY:
                group.append(envelope)
            if len(group) > 1 and await self._handle_group(handle_group, group):
                continue
            for payload, receipt in group:
                outputs = await process(payload, receipt, None)
                if outputs is not None:
                    await send_all(outputs, receipt)

    async def _handle_group(self, handle_group: HandleGroup, group: list[Envelope]) -> bool:
        """Handle the group's messages as one and settle each; False if it failed."""
        stats = self.stats
        stats.busy += 1
        started = time.perf_counter()
        try:
            rejected = await handle_group([payload for payload, _ in group])
        except Exception:
            return False  # nothing of it was stored: each message is tried on its own
        finally:
            stats.busy -= 1
        stats.received += len(group)
        stats.observe(time.perf_counter() - started)
        for (payload, receipt), rejections in zip(group, rejected, strict=True):
            await self._conclude(None, payload, receipt, rejections)
        return True

    async def _serial_fast(self, inbox: Channel[Envelope]) -> None:  # noqa: C901 (inlined)
        # The loop for the common node: one output per message from a function or
        # coroutine on the event loop. Attempts.process + Outputs.send_all inlined, because
        # per-message overhead is what limits a chain of light stages; anything unusual (an
        # error, a rejection, a sink, a filter) goes to the general code.
        handler = self.invoke.handler
        call = handler.call if handler is not None else None
        is_async = handler is not None and handler.kind is Kind.ASYNC
        rejections = _rejections.get()
        assert rejections is not None
        stats = self.stats
        outputs = self.outputs
        channels = outputs.channels
        fan = outputs.fan
        plain = not outputs.terminal  # a sink's every message ends in conclude()
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
                await self._retry(payload, receipt, caught)
                continue
            except BaseException:
                stats.busy -= 1
                raise
            stats.busy -= 1
            if timed:
                stats.observe(clock() - started)
            if rejections:
                await self._conclude(result, payload, receipt, rejections)
                continue
            if not plain or result is None:  # a sink's commit, or a filter: ends here
                more = outputs.conclude(result, payload, receipt, 0, False)
                if more is not None:
                    await outputs.send_all(more, receipt)
                continue
            if receipt is not None:
                if type(result) is list:
                    count_dropped(payload, result, receipt, 0)
                receipt._fork(fan)
            envelope = (result, receipt)
            try:
                for channel in channels:
                    if not channel.put_nowait(envelope):
                        await channel.put(envelope)
            except ChannelClosed as exc:
                raise OutputClosed.of(exc) from None
            stats.emitted += 1
            if receipt is not None:
                receipt._settle(None)

    async def _retry(
        self, payload: Any, receipt: Receipt | None, caught: Exception | asyncio.CancelledError
    ) -> None:
        """The fast loop's first attempt failed: the general code takes the message over."""
        failure = caught if isinstance(caught, Exception) else not_ours(caught)
        outputs = self.outputs
        more = await self.attempts.process(payload, receipt, _bound(outputs.send, receipt), failure)
        if more is not None:
            await outputs.send_all(more, receipt)

    async def _conclude(
        self, result: Any, payload: Any, receipt: Receipt | None, rejections: list[Rejection]
    ) -> None:
        """The fast loop's message was handled but does not simply go on: it ends here (a
        sink, a filter) or the handler rejected some of its items."""
        rejected = len(rejections)
        if rejected:
            await self.failures.rejected(rejections, receipt)
        more = self.outputs.conclude(result, payload, receipt, rejected, False)
        if more is not None:
            await self.outputs.send_all(more, receipt)

    async def _ordered(self) -> None:
        # Up to `workers` messages are processed concurrently by per-message tasks; this
        # task takes them in arrival order and sends their outputs in that order. A
        # generator's outputs stream through a bounded channel of their own message, so
        # one message that expands into millions of outputs is never held whole.
        inbox = self.inbox
        running = asyncio.Semaphore(self.workers)
        streams = self.invoke.streams_on_loop
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
                        await self.outputs.forward(envelope)
                outputs = await task
                if outputs is not None:
                    await self.outputs.send_all(outputs, receipt)

    async def _process_isolated(
        self,
        payload: Any,
        receipt: Receipt | None,
        running: asyncio.Semaphore,
        streamed: Channel[Envelope] | None,
    ) -> list[Any] | None:
        fan = self.outputs.fan

        async def emit(item: Any) -> None:
            # Forked now, sent on by _ordered (Outputs.forward): the message's own settle
            # may come before its outputs leave this node, never before they are counted.
            if receipt is not None:
                receipt._fork(fan)
            assert streamed is not None
            await streamed.put((item, receipt))

        try:
            collect_rejections()
            return await self.attempts.process(payload, receipt, None if streamed is None else emit)
        finally:
            running.release()
            if streamed is not None:
                streamed.close()

    async def _finish(self) -> None:
        """Send what the handler's ``finish()`` returns, once the input has ended."""
        handler = self.node.handler
        finish = None if handler is None or self.node.cpu else getattr(handler.obj, "finish", None)
        if finish is None:
            return
        rejections = collect_rejections()  # what finish() rejects is this node's dead letter
        try:
            result = finish()
            if inspect.isasyncgen(result):
                async for item in result:
                    await self._send_finished(item, rejections)
            elif inspect.isgenerator(result):
                for item in result:
                    await self._send_finished(item, rejections)
            else:
                if inspect.isawaitable(result):
                    result = await result
                await self._send_finished(result, rejections)
        except OutputClosed:
            raise
        except Exception as exc:
            await self.failures.message_failed(exc, None, None, attempts=1)
        finally:
            if rejections:
                await self.failures.rejected(rejections, None)

    async def _send_finished(self, item: Any, rejections: list[Rejection]) -> None:
        if rejections:
            await self.failures.rejected(rejections, None)
        if item is not None and not self.outputs.terminal:
            await self.outputs.send(item, None)


def _bound(send: Callable[[Any, Receipt | None], Any], receipt: Receipt | None) -> EmitOne:
    async def emit(item: Any) -> None:
        await send(item, receipt)

    return emit
