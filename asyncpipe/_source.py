"""Feeding a source node: pulling its iterator, sending every item, stopping gracefully.

A source may call :func:`asyncpipe.reject` for input it cannot turn into a message (a
malformed line, say): that becomes a dead letter and the source goes on. What it rejects is
written at once, even while it waits for its next item (a trigger may wait a long time). An
item yielded as :class:`asyncpipe.Tracked` travels with its receipt, like a submitted one.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Callable
from typing import Any

from ._attempt import DeadLetterWriter, Failures
from ._channel import Channel
from ._deadletter import DeadLetter
from ._errors import ChannelClosed
from ._graph import HandlerNode
from ._handler import NotifyingRejections, collect_rejections
from ._metrics import NodeStats
from ._outputs import Envelope, OutputClosed, Outputs
from ._receipt import Receipt, Tracked

__all__ = ["SourceRuntime"]

logger = logging.getLogger(__name__)

_CLOSE_TIMEOUT = 10.0  # seconds a source's aclose() may take


class SourceRuntime:
    """Runs one source node: emits every item of its iterator, then closes its outputs."""

    def __init__(
        self,
        node: HandlerNode,
        *,
        outputs: list[Channel[Envelope]],
        dead_letter: DeadLetterWriter,
        track: Callable[[Receipt], None] = lambda receipt: None,
        factory: Callable[[], Any] | None = None,
    ) -> None:
        assert node.source is not None
        self.node = node
        self.name = node.name
        self.stats = NodeStats()
        self.outputs = Outputs(outputs, self.stats)
        self.failures = Failures(node, self.stats, dead_letter)
        #: What makes the source's iterator: its own, or one of rows of values (``_rows``).
        self._factory = factory or node.source
        self._track = track
        self._task: asyncio.Task[Any] | None = None
        self._pulling = False
        self._stopping = False

    def stop(self) -> None:
        """Stop gracefully: no more items are pulled; one already pulled is still sent to
        every dependent."""
        self._stopping = True
        if self._task is not None and self._pulling:
            self._task.cancel()

    async def run(self) -> None:
        """Send every item of the source, then close the outputs."""
        self._task = asyncio.current_task()
        rejections = NotifyingRejections()
        collect_rejections(rejections)  # the source iterates in this task's context
        source_done = asyncio.Event()
        flusher = asyncio.create_task(
            self._flush_rejections(rejections, source_done),
            name=f"asyncpipe:{self.name}:rejections",
        )
        source: Any = None
        try:
            source = self._factory()
            await self._pull(source, rejections)
        except OutputClosed:
            raise
        except Exception as exc:
            if rejections:
                await self.failures.rejected(rejections, None)
            await self.failures.message_failed(exc, None, None, attempts=1)
        finally:
            try:
                await self._close(source)
            finally:
                # Not cancelled: a write under way has taken its letters off the list, and
                # the source's close may have rejected more.
                source_done.set()
                rejections.arrived.set()
                try:
                    await asyncio.wait([flusher])
                finally:
                    flusher.cancel()  # only if this task was cancelled while waiting
                    self.outputs.close()

    async def _pull(self, source: Any, rejections: NotifyingRejections) -> None:
        stats = self.stats
        channels = self.outputs.channels
        fan = len(channels)
        while not self._stopping:
            self._pulling = True
            try:
                item = await anext(source)
            except StopAsyncIteration:
                break
            except asyncio.CancelledError:
                task = self._task
                if self._stopping and task is not None and task.uncancel() == 0:
                    break  # stop() interrupted the wait for the next item
                raise
            finally:
                self._pulling = False
            if rejections:
                await self.failures.rejected(rejections, None)
            stats.received += 1
            # Outputs.send() inlined: a source's per-item path is as hot as a stage's.
            envelope: Envelope
            if type(item) is Tracked:
                payload, receipt = item
                self._track(receipt)
                receipt._fork(fan)
                envelope = (payload, receipt)
            else:
                envelope = (item, None)
            try:
                for channel in channels:
                    if not channel.put_nowait(envelope):
                        await channel.put(envelope)
            except ChannelClosed as exc:
                raise OutputClosed.of(exc) from None
            stats.emitted += 1
        if rejections:
            await self.failures.rejected(rejections, None)

    async def _close(self, source: Any) -> None:
        """Close the source's iterator; a close that fails or hangs is a dead letter of the
        node (and logged), not a failure of the run: what it produced has been sent."""
        aclose = getattr(source, "aclose", None)
        if aclose is None:
            return
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await aclose()
        except Exception as exc:
            hung = isinstance(exc, TimeoutError) and not str(exc)
            reason = (
                f"did not close within {_CLOSE_TIMEOUT:g} s"
                if hung
                else f"failed to close: {type(exc).__name__}: {exc}"
            )
            logger.error("node %r: source %s", self.name, reason, extra={"node": self.name})
            await self.failures.write_letter(
                DeadLetter(
                    node=self.name,
                    error_type="SourceCloseTimeout" if hung else type(exc).__qualname__,
                    error_message=f"source {reason}",
                    payload=None,
                    traceback=None if hung else "".join(traceback.format_exception(exc)),
                )
            )

    async def _flush_rejections(
        self, rejections: NotifyingRejections, source_done: asyncio.Event
    ) -> None:
        """Write what the source rejects as it comes; return once the source is done and
        everything it rejected is written."""
        while True:
            await rejections.arrived.wait()
            rejections.arrived.clear()  # an append after this sets it again
            if rejections:
                await self.failures.rejected(rejections, None)
            if source_done.is_set() and not rejections:
                return
