"""Attempts at a message: retries with backoff, the error policy, poison isolation, and the
dead letters they write.

A message's handler is tried ``1 + retries`` times (``backoff`` seconds before the first
retry, doubling up to ``max_backoff``). Then the node's :class:`ErrorPolicy` decides: stop
the pipeline, skip the message, or dead-letter it -- and for a list message, first find the
items that fail on their own (``_isolation``), so that only they are skipped or
dead-lettered. Items a handler refuses with :func:`asyncpipe.reject` are dead letters too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ._deadletter import DeadLetter
from ._errors import HandlerError, HandlerSetupError
from ._graph import ErrorPolicy, HandlerNode
from ._handler import Rejection, _rejections
from ._invoke import EmitOne, Invoker, not_ours, shift
from ._isolation import Part, bisect
from ._metrics import NodeStats
from ._outputs import OutputClosed, Outputs, Separate
from ._receipt import Outcome, Receipt

__all__ = ["Attempts", "DeadLetterWriter", "Failures"]

logger = logging.getLogger(__name__)

DeadLetterWriter = Callable[[DeadLetter, Receipt | None], Awaitable[None]]


class Failures:
    """A node's error policy applied: dead letters, skips, fail-fast, with the counters."""

    def __init__(self, node: HandlerNode, stats: NodeStats, write: DeadLetterWriter) -> None:
        self.name = node.name
        self.policy = node.on_error
        self.label = node.handler.label if node.handler is not None else "source"
        self.stats = stats
        self.write = write

    async def message_failed(
        self, exc: Exception, payload: Any, receipt: Receipt | None, attempts: int
    ) -> None:
        """A whole message failed for good: skip it, dead-letter it, or (fail-fast) raise
        :class:`HandlerError`. Settles its receipt."""
        if self.policy is ErrorPolicy.FAIL:
            error = HandlerError(self.name, f"{self.label} raised {type(exc).__name__}: {exc}")
            raise error from exc
        if self.policy is ErrorPolicy.SKIP:
            self._log("skipped a message", attempts, type(exc).__name__, str(exc))
            self.stats.skipped += 1
            if receipt is not None:
                receipt._settle(Outcome.SKIPPED, payload)
            return
        letter = self._letter(exc, payload, receipt, attempts, None)
        self._log("dead-lettered a message", attempts, letter.error_type, letter.error_message)
        self.stats.dead_letters += 1
        await self.write(letter, receipt)
        if receipt is not None:
            receipt._settle(Outcome.DEAD_LETTERED, payload)

    async def item_failed(
        self, exc: Exception, item: Any, index: int, receipt: Receipt | None, attempts: int
    ) -> None:
        """One item of a message failed on its own: skip or dead-letter just that item (the
        message's receipt counts it; the message itself goes on)."""
        if self.policy is ErrorPolicy.SKIP:
            self._log(f"skipped item {index}", attempts, type(exc).__name__, str(exc))
            self.stats.skipped += 1
            if receipt is not None:
                receipt._record(Outcome.SKIPPED, item, items=1)
            return
        letter = self._letter(exc, item, receipt, attempts, index)
        self._log(f"dead-lettered item {index}", attempts, letter.error_type, letter.error_message)
        self.stats.dead_letters += 1
        await self.write(letter, receipt)
        if receipt is not None:
            receipt._record(Outcome.DEAD_LETTERED, item, items=1)

    async def rejected(self, rejections: list[Rejection], receipt: Receipt | None) -> None:
        """Dead-letter the items a handler (or source) refused, and empty the list."""
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
            await self.write(letter, receipt)
            if receipt is not None:
                receipt._record(Outcome.DEAD_LETTERED, rejection.payload, items=1)

    async def write_letter(self, letter: DeadLetter) -> None:
        """Write a dead letter of this node made elsewhere (e.g. a source's failed close)."""
        self.stats.dead_letters += 1
        await self.write(letter, None)

    def _letter(
        self,
        exc: Exception,
        payload: Any,
        receipt: Receipt | None,
        attempts: int,
        index: int | None,
    ) -> DeadLetter:
        return DeadLetter.from_exception(
            self.name,
            exc,
            payload,
            attempts=attempts,
            receipt_id=receipt.id if receipt else None,
            origin=receipt.origin if receipt else None,
            index=index,
        )

    def _log(self, what: str, attempts: int, error_type: str, message: str) -> None:
        logger.warning(
            "node %r: %s after %d attempt(s): %s: %s",
            self.name,
            what,
            attempts,
            error_type,
            message,
            extra={"node": self.name},
        )


class Attempts:
    """Handles one message at a time with retries, the error policy and poison isolation."""

    def __init__(
        self, node: HandlerNode, invoke: Invoker, outputs: Outputs, failures: Failures
    ) -> None:
        self.node = node
        self.name = node.name
        self.invoke = invoke
        self.outputs = outputs
        self.failures = failures
        self.stats = failures.stats

    async def process(
        self,
        payload: Any,
        receipt: Receipt | None,
        emit: EmitOne | None,
        failure: Exception | None = None,
    ) -> list[Any] | None:
        """Handle one message; return the outputs still to send, or None when it ended
        (committed by a sink, filtered, dead-lettered, skipped) with its receipt settled.

        With ``emit``, a generator's outputs are sent as they come and ``[]`` is returned.
        ``failure`` is the error of a first attempt already made (by the fast loop).
        Raises :class:`HandlerError` under the fail-fast policy, and what is not the
        message's fault (a setup failure, the pipeline being torn down).
        """
        stats = self.stats
        if failure is None:
            stats.received += 1
        stats.busy += 1
        started = time.perf_counter()
        rejections = _rejections.get()
        assert rejections is not None
        emitted = 0

        async def counted(item: Any) -> None:
            nonlocal emitted
            emitted += 1
            assert emit is not None
            await emit(item)

        try:
            attempts = 0
            while True:
                attempts += 1
                rejections.clear()
                try:
                    if failure is not None:
                        first, failure = failure, None
                        raise first
                    result = await self.invoke(
                        payload, rejections, None if emit is None else counted
                    )
                    break
                except (HandlerSetupError, OutputClosed):
                    raise  # not this message's fault: the node cannot run, or is torn down
                except (Exception, asyncio.CancelledError) as caught:
                    exc = caught if isinstance(caught, Exception) else not_ours(caught)
                    stats.errors += 1
                    if emitted or attempts > self.node.retries:
                        rejections.clear()  # the whole message is dead: forget its rejections
                        if not emitted and self._isolates(payload):
                            return await self._isolate(exc, payload, receipt, attempts)
                        await self.failures.message_failed(exc, payload, receipt, attempts)
                        return None
                    stats.retries += 1
                    await self._backoff(exc, attempts)
            rejected = len(rejections)
            if rejected:
                await self.failures.rejected(rejections, receipt)
            return self.outputs.conclude(result, payload, receipt, rejected, self.invoke.streams)
        finally:
            stats.busy -= 1
            stats.observe(time.perf_counter() - started)

    async def _backoff(self, exc: Exception, attempt: int) -> None:
        node = self.node
        delay = min(node.backoff * 2 ** (attempt - 1), node.max_backoff)
        logger.info(
            "node %r: %s: %s; retry %d/%d in %.3fs",
            self.name,
            type(exc).__name__,
            exc,
            attempt,
            node.retries,
            delay,
            extra={"node": self.name},
        )
        if delay:
            await asyncio.sleep(delay)

    # -- poison isolation ----------------------------------------------------------------

    def _isolates(self, payload: Any) -> bool:
        return self.node.isolate_failures and type(payload) is list and len(payload) > 1

    async def _isolate(
        self, exc: Exception, payload: list[Any], receipt: Receipt | None, attempts: int
    ) -> list[Any] | None:
        """Handle a failed list message in parts (see ``_isolation``); return its outputs
        like :meth:`process` does."""
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
            await self.failures.item_failed(error, item, index, receipt, attempts)

        parts = await bisect(payload, self.invoke.call_part, failed)
        rejected = failures
        for part in parts:
            if part.rejections:
                rejected += len(part.rejections)
                shifted = [shift(r, part.offset) for r in part.rejections]
                await self.failures.rejected(shifted, receipt)
        if not parts:
            if receipt is not None:
                receipt._settle(None)  # every item has its own dead letter (or skip)
            return None
        result = _combine(parts, self.invoke.streams)
        return self.outputs.conclude(result, payload, receipt, rejected, self.invoke.streams)


def _combine(parts: list[Part], streams: bool) -> Any:
    """The parts' results as one result: a generator's outputs in order; list results
    joined into one list; None if every part was filtered; else the results as
    :class:`Separate` messages."""
    if streams:
        return [out for part in parts for out in part.result]
    results = [part.result for part in parts if part.result is not None]
    if not results:
        return None
    if all(type(result) is list for result in results):
        return [item for result in results for item in result]
    return Separate(results)
