"""Running a stateful node: its lanes, each applying groups of messages to its state and
committing the changes -- with the names of the messages applied and the outputs they
produced -- in one transaction *before* anything is emitted.

For each group of messages a lane takes from its input (one message when it is alone;
when more are waiting, :data:`MAX_GROUP` at a time, applied one batch after the other
while messages are waiting -- and while the previous group's commit is being written --
up to :data:`MAX_COMMIT`: a stream gets few, large commits, each writing a key once
however many of its messages changed it):

1. messages whose name the store has already marked are *replays*: they do not touch the
   state; their rejections are written again (dead-letter sinks keep one per item). The
   outputs of an upstream stateful node's apply in this run (a fresh :class:`Relay`)
   cannot have been seen (:func:`unseen`): their names are not looked up;
2. the others are applied to the state (:class:`LaneState`);
3. one commit: the changed keys, a mark per named message (with its rejections and its
   outputs: the outbox), the outputs now delivered, the lane's meta;
4. then, in order, each message's rejections are dead-lettered, its outputs sent, its
   receipt settled.

When a message's receipt resolves, its outputs were committed downstream: the next commit
drops them from the outbox. At start, outputs still in the outbox (a crash came between
the commit and their delivery) are sent again, first, and waited for.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._channel import EMPTY as _EMPTY
from .._channel import Channel, EndOfStream
from .._errors import HandlerError, PipelineAborted
from .._handler import Rejection, collect_rejections
from .._lanes import Arrivals, LaneEnvelope, dispatch
from .._receipt import Outcome, Receipt, item_count
from ._codec import Codec
from ._relay import Relay, relay_origin, unseen
from ._store import StateCommit, StateStore

if TYPE_CHECKING:
    from .._node import NodeRuntime

__all__ = ["MAX_COMMIT", "MAX_GROUP", "LaneState", "run_stateful"]

logger = logging.getLogger(__name__)

#: Messages a lane takes from its input at once (when that many are waiting).
MAX_GROUP = 128
#: Messages one commit covers at most: a group grows while the previous commit is in
#: flight or messages are waiting (:meth:`Lane._grow`).
MAX_COMMIT = 8 * MAX_GROUP

_Result = tuple[list[Any], list[Rejection]]


class LaneState(abc.ABC):
    """One lane's share of a stateful node's state (the keys routed to the lane)."""

    codec: Codec

    @abc.abstractmethod
    async def open(self, store: StateStore, namespace: str, lane: int, lanes: int) -> None:
        """Restore what the store holds for this lane (before the first message)."""

    @abc.abstractmethod
    async def prepare(self, parts: list[Any]) -> list[Any]:
        """Get ready to apply these messages (load their keys); one item per message,
        given to :meth:`apply` in order."""

    @abc.abstractmethod
    async def apply(self, prepared: Any) -> _Result:
        """Apply one message: its outputs (records, sent as one list message if any) and
        the records it rejected (indexed within the message)."""

    @abc.abstractmethod
    def changes(self) -> list[tuple[bytes, bytes | None]]:
        """The keys changed since the last call, encoded now (None: deleted); the lane
        commits them while it may already apply the next messages."""

    def meta(self) -> dict[str, bytes]:
        """Meta entries to commit with the changes."""
        return {}

    #: Whether the lane can run in shared mode (:meth:`forget` implemented).
    shareable = False

    def forget(self) -> None:
        """Shared mode (``state/_shared.py``): drop the state held in memory -- another
        process may have changed it -- so that :meth:`prepare` reads it from the store."""
        raise NotImplementedError

    def committed(self) -> None:
        """The changes of the oldest commit in flight are durable (or, with a
        non-persistent store, accepted): what only they kept in memory may be dropped."""
        return None

    def finish(self) -> list[Any]:
        """Outputs at the end of the input (sent as one list message if any)."""
        return []


async def run_stateful(runtime: NodeRuntime, make: Callable[[], LaneState]) -> None:
    """Run a stateful node: send its undelivered outputs again, run its lanes until the
    input ends, then send what each lane's :meth:`LaneState.finish` returns."""
    node = runtime.node
    store: StateStore = runtime.state_store
    lane_type, shared = _lane_type(store)
    lanes = [lane_type(runtime, make(), i) for i in range(runtime.workers)]
    if shared and not lanes[0].state.shareable:
        raise ValueError(
            f"node {node.name!r}: {type(lanes[0].state).__name__} cannot run over a store in "
            "shared mode (several processes); run it in one process"
        )
    if not shared:  # shared mode sends them again inside its sections
        delivered = await _redeliver(runtime, store, lanes[0].state.codec)
        lanes[0].delivered.extend(delivered)
    for lane in lanes:
        await lane.state.open(store, node.name, lane.index, len(lanes))
    if len(lanes) == 1:
        await lanes[0].run(runtime.inbox, Arrivals())
    else:
        assert node.key is not None  # checked when the node was made
        channels: list[Channel[Any]] = [
            Channel(node.capacity, f"{node.name}:lane{i}") for i in range(len(lanes))
        ]
        async with asyncio.TaskGroup() as group:
            group.create_task(
                dispatch(runtime.inbox, channels, node.key, named=True),
                name=f"asyncpipe:{node.name}:keys",
            )
            for lane, channel in zip(lanes, channels, strict=True):
                group.create_task(
                    lane.run(channel, None), name=f"asyncpipe:{node.name}:lane{lane.index}"
                )
    for lane in lanes:
        outputs = lane.state.finish()
        if outputs and not runtime.outputs.terminal:
            await runtime.outputs.send(outputs, None)
    for lane in lanes:
        await lane.close()


def _lane_type(store: StateStore) -> tuple[type[Lane], bool]:
    """The lane class for ``store``: :class:`Lane`, or the shared mode's."""
    from ._shared import SharedLane, is_shared  # it builds on Lane

    return (SharedLane, True) if is_shared(store) else (Lane, False)


async def _redeliver(runtime: NodeRuntime, store: StateStore, codec: Codec) -> list[str]:
    """Send the outputs left in the outbox by an earlier run, in commit order, and wait
    until they reached their ends; return their marks' names."""
    pending = await store.undelivered(runtime.node.name)
    if not pending:
        return []
    logger.info(
        "node %r: sending again the outputs of %d message(s) committed but not delivered",
        runtime.name,
        len(pending),
        extra={"node": runtime.name},
    )
    receipts = []
    if not runtime.outputs.terminal:
        for name, outputs in pending:
            # The origin a stateful node downstream names them by, as in the first run.
            receipt = Receipt(runtime.name, origin=relay_origin(runtime.name, name))
            await runtime.outputs.send(codec.decode(outputs), receipt)
            receipt.release()
            receipts.append(receipt)
    for receipt in receipts:
        await receipt
    return [name for name, _ in pending]


@dataclass(slots=True)
class _Group:
    """Messages applied together, their results, and their commit (in flight: ``task``)."""

    group: list[LaneEnvelope]
    results: list[tuple[_Result, bool]]  # ((outputs, rejections), replayed)
    commit: StateCommit
    names: dict[str, list[Rejection]]  # named messages applied: their rejections
    task: asyncio.Task[None] | None = None


def _take(channel: Channel[Any], group: list[Any], arrivals: Arrivals | None) -> list[LaneEnvelope]:
    """``group`` and the envelopes waiting in ``channel``, up to :data:`MAX_GROUP`, as
    lane envelopes (naming the messages of a node's own input with ``arrivals``)."""
    get_nowait = channel.get_nowait
    while len(group) < MAX_GROUP:
        envelope = get_nowait(_EMPTY)
        if envelope is _EMPTY:
            break
        group.append(envelope)
    if arrivals is not None:
        return [(p, r, None, arrivals.name(r)) for p, r in group]
    return group


class Lane:
    """One lane of a stateful node: applies, commits, then emits (module docstring)."""

    def __init__(self, runtime: NodeRuntime, state: LaneState, index: int) -> None:
        self.runtime = runtime
        self.state = state
        self.index = index
        self.store: StateStore = runtime.state_store
        self.namespace = runtime.node.name
        #: Marks whose outputs were delivered since the last commit.
        self.delivered: list[str] = []
        #: Receipts of named messages applied in this run whose outputs are in flight.
        self.inflight: dict[str, Receipt] = {}
        #: The same, in commit order, until they and every one before are delivered.
        self.unsettled: collections.deque[tuple[str, Receipt]] = collections.deque()

    async def run(self, channel: Channel[Any], arrivals: Arrivals | None) -> None:
        """Apply every message of ``channel`` until it ends. With ``arrivals`` the channel
        holds ``(payload, receipt)`` envelopes (the node's own input), otherwise lane
        envelopes from the dispatcher.

        Over a persistent store one commit may be in flight while the next group is
        applied (never emitted before its own commit): the store's thread writes while
        the event loop works. A message alone is committed and emitted at once.
        """
        self.rejections = collect_rejections()  # what update() rejects with reject()
        pending: _Group | None = None
        try:
            while True:
                group = _take(channel, [], arrivals)
                if not group:
                    if pending is not None:
                        await self._finish(pending)
                        pending = None
                        continue
                    try:
                        first = await channel.get()
                    except EndOfStream:
                        return
                    group = _take(channel, [first], arrivals)
                applied = await self._apply_group(group, pending)
                await self._grow(channel, arrivals, applied, pending)
                pending = self._start_commit(applied)
                if pending.task is not None:
                    # Let the commit start (hand its transaction to the store's thread or
                    # connection) before the next group: applying a group never yields,
                    # so without this the commit would only begin once awaited, after
                    # that group, and the loop would wait for all of it.
                    await asyncio.sleep(0)
        finally:
            if pending is not None and pending.task is not None and not pending.task.done():
                pending.task.cancel()  # torn down: the store completes or rolls it back
                await asyncio.gather(pending.task, return_exceptions=True)

    async def close(self) -> None:
        """The input has ended: wait until the outputs in flight are delivered (or their
        receipts aborted) and commit that, so a restart does not send them again."""
        for receipt in list(self.inflight.values()):
            try:
                await receipt
            except PipelineAborted:
                pass
        await asyncio.sleep(0)  # let the receipts' done callbacks run
        if self.delivered:
            await self._finish(self._start_commit(_Group([], [], StateCommit(), {})))

    async def _grow(
        self,
        channel: Channel[Any],
        arrivals: Arrivals | None,
        applied: _Group,
        pending: _Group | None,
    ) -> None:
        """Apply the messages waiting into ``applied`` (up to :data:`MAX_COMMIT`) rather
        than commit it at once, and end ``pending`` (the previous group) as soon as its
        commit is written. The group is committed when nothing more is waiting: a message
        alone is committed at once, a stream gets fewer, larger commits (fewer rows: a
        key changed by many messages is written once)."""
        while len(applied.group) < MAX_COMMIT:
            await asyncio.sleep(0)  # let the commit's completion and new messages arrive
            if pending is not None and (pending.task is None or pending.task.done()):
                await self._finish(pending)
                pending = None
            group = _take(channel, [], arrivals)
            if not group:
                break
            await self._apply_group(group, pending, applied)
        if pending is not None:
            await self._finish(pending)

    async def _apply_group(
        self, group: list[LaneEnvelope], pending: _Group | None, into: _Group | None = None
    ) -> _Group:
        """Apply ``group`` (as a new group, or appended to ``into``'s messages)."""
        names = [e[3] for e in group if e[3] is not None and not unseen(e[1])]
        found = await self.store.seen(self.namespace, names) if names else {}
        fresh = [envelope[0] for envelope in group if envelope[3] not in found]
        prepared = iter(await self.state.prepare(fresh))
        codec = self.state.codec
        if into is None:
            applied = _Group(group, [], StateCommit(), {})
        else:
            applied = into
            applied.group.extend(group)
        earlier = pending.names if pending is not None else {}  # committing now
        for part, _, indices, name in group:
            mark = found.get(name) if name is not None else None
            if mark is not None:
                rejected = [Rejection(*fields) for fields in codec.decode(mark.rejections)]
                applied.results.append((([], rejected), True))
                continue
            ready = next(prepared)
            if name is not None and (name in applied.names or name in earlier):
                # A replay of a message applied moments ago (its mark not stored yet).
                again = applied.names.get(name, earlier.get(name))
                applied.results.append((([], again or []), True))
                continue
            result = await self._apply(part, ready, indices)
            if name is not None:
                applied.names[name] = result[1]
                applied.commit.marks.append((name, *self._outbox(result, codec)))
            applied.results.append((result, False))
        return applied

    async def _apply(self, part: Any, prepared: Any, indices: list[int] | None) -> _Result:
        outputs, rejected = await self.state.apply(prepared)
        if self.rejections:  # reject() called by the user's update()
            rejected = [*rejected, *(_position(r, part) for r in self.rejections)]
            self.rejections.clear()
        if indices is not None and rejected:
            rejected = [
                r if r.index is None else Rejection(r.payload, r.reason, indices[r.index], r.origin)
                for r in rejected
            ]
        return outputs, rejected

    def _outbox(self, result: _Result, codec: Codec) -> tuple[bytes, bytes | None]:
        outputs, rejected = result
        fields = [[r.payload, r.reason, r.index, r.origin] for r in rejected]
        send = outputs and not self.runtime.outputs.terminal
        return codec.encode(fields), codec.encode(outputs) if send else None

    def _start_commit(self, applied: _Group) -> _Group:
        """Take the state's changes since the last commit (a snapshot, encoded now) into
        the group's commit and start writing it."""
        commit = applied.commit
        if self.store.persistent:
            commit.changes = self.state.changes()
            commit.meta = self.state.meta()
        if self.delivered:
            commit.delivered, self.delivered = self.delivered, []
        if commit.changes or commit.marks or commit.delivered or commit.meta:
            applied.task = asyncio.create_task(
                self.store.commit(self.namespace, commit),
                name=f"asyncpipe:{self.namespace}:commit",
            )
        return applied

    async def _finish(self, applied: _Group) -> None:
        """Wait for the group's commit, then end its messages in order."""
        if applied.task is not None:
            try:
                await applied.task
            except Exception as exc:
                # The state in memory is ahead of the store now: going on would break
                # the promise, so the node (and the pipeline) stops.
                raise HandlerError(
                    self.runtime.name, f"state store commit failed: {exc!r}"
                ) from exc
        self.state.committed()
        for envelope, (result, replayed) in zip(applied.group, applied.results, strict=True):
            await self._end(envelope, result, replayed)

    async def _end(self, envelope: LaneEnvelope, result: _Result, replayed: bool) -> None:
        part, receipt, _, name = envelope
        runtime = self.runtime
        stats = runtime.stats
        stats.received += 1
        outputs, rejected = result
        if rejected:
            await runtime.failures.rejected(list(rejected), receipt)
        if outputs and not runtime.outputs.terminal:
            if receipt is not None and name is not None:
                relay = Relay(receipt, runtime.name, name, fresh=not replayed)
                await runtime.outputs.send(outputs, relay)
                self._follow(name, relay)
                relay.release()
            else:
                await runtime.outputs.send(outputs, receipt)
                if receipt is not None:
                    receipt._settle(None)
            return
        if receipt is None:
            if runtime.outputs.terminal:
                stats.committed += 1
            return
        if replayed and name is not None and name in self.inflight:
            # The first copy's outputs are still on their way: resolve with them.
            receipt._fork(1)
            self.inflight[name].add_done_callback(lambda _: receipt._settle(None))
        items = max(0, item_count(part) - len(rejected))
        if runtime.outputs.terminal:
            stats.committed += 1
            receipt._settle(Outcome.COMMITTED, items=items)
        else:
            receipt._settle(Outcome.ABSORBED, items=items)

    def _follow(self, name: str, receipt: Receipt) -> None:
        self.inflight[name] = receipt
        self.unsettled.append((name, receipt))
        receipt.add_done_callback(self._settled)

    def _settled(self, _: Receipt) -> None:
        """Note as delivered the outputs delivered so far *in commit order*: what stays in
        the outbox is always the latest part of it, so sending it again after a crash
        replays the outputs in their first order (an upsert sink ends with the same rows)."""
        unsettled = self.unsettled
        while unsettled:
            future = unsettled[0][1]._future
            if not future.done() or future.cancelled() or future.exception() is not None:
                break  # not delivered yet (or never: aborted)
            name, receipt = unsettled.popleft()
            self.delivered.append(name)
            if self.inflight.get(name) is receipt:
                del self.inflight[name]


def _position(rejection: Rejection, part: Any) -> Rejection:
    """A rejection made without an index, given the position of its record in the part."""
    if rejection.index is not None:
        return rejection
    records = part if type(part) is list else [part]
    for index, record in enumerate(records):
        if record is rejection.payload:
            return Rejection(rejection.payload, rejection.reason, index, rejection.origin)
    return rejection
