"""The intake of one batch: checked, refused early or taken, answered from its receipt.

A batch is refused as a whole (:class:`Refused`, nothing of it taken) when it is
malformed as a whole, the server is stopping or not serving yet, or the wait it would
face exceeds its deadline (:mod:`._shedding`). Once taken, it runs to its end in a task
of its own -- intake dead letters written, receipt resolved, slot released -- whatever
becomes of the call: the call is answered just before the client's deadline
(``DEADLINE_EXCEEDED``) if the batch is not done by then, never after it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Literal

import grpc
from google.protobuf.message import Message

from .._deadletter import DeadLetter
from .._errors import PipelineAborted, PipelineClosed
from .._executor import PipelineExecutor
from .._receipt import Receipt
from ._replies import item_text, pipeline_outcome, response
from ._routes import Converted, Route, convert_items, quoted
from ._shedding import LoadEstimator, Ticket
from ._status import Refused

__all__ = ["MAX_BATCH_ID_CHARS", "Ack", "Intake"]

logger = logging.getLogger(__name__)

Ack = Literal["committed", "accepted"]

#: The longest batch_id taken (it is echoed in the reply and kept with dead letters).
MAX_BATCH_ID_CHARS = 128
_REPLY_MARGIN = 0.05  # seconds kept back from the client's deadline to send the reply

#: The outcome of a taken batch: its rejections, what failed (None: nothing), items lost.
_Outcome = tuple[list[tuple[int, str]], str | None, int]


class Intake:
    """Batches into ``executor``; the server's settings are documented on
    :class:`IngestServer`. ``ready`` and ``closing`` are the server's events."""

    def __init__(
        self,
        executor: PipelineExecutor,
        *,
        ack: Ack,
        max_batch_items: int,
        max_in_flight: int,
        require_batch_id: bool,
        max_message_bytes: int,
        ready: asyncio.Event,
        closing: asyncio.Event,
    ) -> None:
        self.executor = executor
        self.ack = ack
        self.max_batch_items = max_batch_items
        self.require_batch_id = require_batch_id
        self.max_message_bytes = max_message_bytes
        self.ready = ready
        self.closing = closing
        #: The expected wait of a batch, from which overload is refused early.
        self.load = LoadEstimator()
        self._slots = asyncio.Semaphore(max_in_flight)
        # Taken batches whose call may have ended (deadline, client gone): each runs to
        # its end, releasing its slot, whatever became of the call.
        self._completing: set[asyncio.Task[_Outcome]] = set()

    async def handle(
        self, route: Route, reply_type: type[Message], batch: Any, time_remaining: float | None
    ) -> Any:
        """Answer one batch with a ``reply_type`` (raises :class:`Refused` when it is
        refused as a whole)."""
        started = time.perf_counter()
        node = route.node
        items = getattr(batch, route.items)
        batch_id: str = getattr(batch, route.batch_id)
        self._check(route, batch_id, items)
        deadline = None if time_remaining is None else time.monotonic() + time_remaining
        if not self.ready.is_set():
            await self._until_ready(deadline)
        if self.ack == "committed":
            overloaded = self.load.refusal(_left(deadline))
            if overloaded is not None:
                raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, overloaded)
        converted = convert_items(route.convert, items)
        # Stable across resends: the sinks keep one dead letter per (node, origin, index).
        origin = f"grpc:{route.items}:{batch_id}"
        ticket = self.load.take()
        try:
            receipt = None
            if converted.records:
                receipt = await self._submit(node, origin, batch_id, converted.records, deadline)
        except BaseException:
            self.load.finish(ticket, measured=False)
            raise
        # Taken: from here the batch runs to its end even if this call ends first.
        completing = asyncio.create_task(
            self._complete(node, origin, batch_id, items, converted, receipt, ticket),
            name=f"asyncpipe:ingest:batch:{quoted(batch_id)}",
        )
        self._completing.add(completing)
        completing.add_done_callback(self._completed)
        try:
            async with asyncio.timeout(_left(deadline)):
                rejections, failure, failed_items = await asyncio.shield(completing)
        except TimeoutError:
            raise Refused(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"batch {quoted(batch_id)} is not stored yet at the deadline: it stays in the "
                "pipeline and will be committed; sending it again (same batch_id) is harmless",
            ) from None
        return self._reply(
            reply_type, batch_id, len(items), rejections, failure, failed_items, started
        )

    def _check(self, route: Route, batch_id: str, items: Any) -> None:
        """Raise :class:`Refused` for a batch refused as a whole."""
        if self.require_batch_id and not batch_id:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "batch_id is empty")
        if len(batch_id) > MAX_BATCH_ID_CHARS:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"batch_id {quoted(batch_id)} is too long: at most {MAX_BATCH_ID_CHARS} chars",
            )
        if len(items) > self.max_batch_items:
            raise Refused(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"batch {quoted(batch_id)} has {len(items)} {route.items}; "
                f"the limit is {self.max_batch_items}",
            )
        if self.closing.is_set():
            raise Refused(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")

    async def _until_ready(self, deadline: float | None) -> None:
        try:
            async with asyncio.timeout(_left(deadline)):
                await self.ready.wait()
        except TimeoutError:
            raise Refused(
                grpc.StatusCode.UNAVAILABLE,
                "not serving yet: the pipeline is still starting; send it again shortly",
            ) from None

    def _reply(
        self,
        reply_type: type[Message],
        batch_id: str,
        received: int,
        rejections: list[tuple[int, str]],
        failure: str | None,
        failed_items: int,
        started: float,
    ) -> Any:
        if failure is not None:
            message = f"{failed_items} item(s) failed in the pipeline: {failure}"
        elif self.ack == "accepted":
            message = "accepted into the pipeline (not yet stored)"
        else:
            message = "stored" if not rejections else "stored; rejections listed"
        reply = response(
            reply_type,
            success=failure is None,
            message=message,
            batch_id=batch_id,
            received=received,
            rejected=min(received, len(rejections) + failed_items),
            rejections=rejections,
            budget=self.max_message_bytes // 2 - len(batch_id),
        )
        reply.processing_duration_seconds = time.perf_counter() - started
        return reply

    async def _complete(
        self,
        node: str,
        origin: str,
        batch_id: str,
        items: Any,
        converted: Converted,
        receipt: Receipt | None,
        ticket: Ticket,
    ) -> _Outcome:
        """Take a taken batch to its end: its intake dead letters written and, with
        ``ack="committed"``, its receipt resolved; then its slot is released."""
        measured = False
        try:
            # Only now that the batch is taken: a refused batch leaves no trace.
            if converted.rejections:
                await self._dead_letter_invalid(node, origin, batch_id, items, converted)
            if receipt is None or self.ack != "committed":
                return converted.rejections, None, 0
            try:
                await receipt
            except PipelineAborted:
                raise Refused(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the pipeline stopped before batch {quoted(batch_id)} was stored; "
                    "send it again",
                ) from None
            measured = True
            return pipeline_outcome(receipt, converted, node)
        finally:
            if receipt is not None:
                self._slots.release()
            self.load.finish(ticket, measured=measured)

    def _completed(self, task: asyncio.Task[_Outcome]) -> None:
        self._completing.discard(task)
        if task.cancelled():
            return
        error = task.exception()  # retrieved even when the call had ended
        if error is not None and not isinstance(error, Refused):
            logger.error("ingestion: %s failed", task.get_name(), exc_info=error)

    async def _submit(
        self,
        node: str,
        origin: str,
        batch_id: str,
        records: list[dict[str, Any]],
        deadline: float | None,
    ) -> Receipt:
        """Take a slot and put the records into ``node``'s channel before the client's
        ``deadline`` (``time.monotonic()``) is near; their dead letters carry ``origin``.

        Returns holding the slot (released once the batch has reached its end)."""
        slots = self._slots
        acquired = False
        try:
            async with asyncio.timeout(_left(deadline)):
                await slots.acquire()
                acquired = True
                return await self.executor.submit(node, records, origin=origin)
        except TimeoutError:
            if acquired:
                slots.release()
            raise Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the pipeline is saturated: batch {quoted(batch_id)} was not taken before "
                "the deadline; send it again later",
            ) from None
        except PipelineClosed:
            if acquired:
                slots.release()
            raise Refused(
                grpc.StatusCode.UNAVAILABLE, "the pipeline is not taking input (stopping)"
            ) from None
        except BaseException:
            if acquired:
                slots.release()
            raise

    async def _dead_letter_invalid(
        self, node: str, origin: str, batch_id: str, items: Any, converted: Converted
    ) -> None:
        for index, reason in converted.rejections:
            await self.executor.write_dead_letter(
                DeadLetter(
                    node=node,
                    error_type="Rejected",
                    error_message=f"batch {quoted(batch_id)} item {index}: {reason}",
                    payload=item_text(items[index]),
                    index=index,
                    origin=origin,
                )
            )


def _left(deadline: float | None) -> float | None:
    """Seconds until shortly before ``deadline`` (``time.monotonic()``; None: no limit)."""
    if deadline is None:
        return None
    return max(0.0, deadline - time.monotonic() - _REPLY_MARGIN)
