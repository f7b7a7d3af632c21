"""Handlers: what a node does with each message.

A node's handler may be

* a :class:`BaseHandler` subclass (``handle`` async or sync, with ``setup``/``teardown``);
* a plain function, sync or ``async``, taking one message and returning one;
* a generator or async generator function taking one message and yielding many.

Returning ``None`` means "nothing to emit" (a filter). A handler can also drop single items
of a batch with :func:`reject`, which dead-letters them with a reason while the rest of the
batch goes on.

A source node instead takes something that produces messages on its own: an async
iterable, a (non-string) iterable, or a function with no parameters returning one of those.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import functools
import inspect
import types
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from dataclasses import dataclass
from typing import Any, Self

__all__ = ["BaseHandler", "Rejection", "reject"]


class BaseHandler:
    """Base class for stateful handlers.

    Subclasses implement ``handle(data)`` (``async def`` or plain ``def``) and may override
    the lifecycle hooks. ``setup()`` runs once before the first message (once per worker
    process for ``cpu=True`` nodes, so it is the place to load a model), ``teardown()``
    once after the last. The original framework's ``pre_message`` / ``pos_message`` hooks are
    honoured as aliases of ``setup`` / ``teardown``. A stateful handler (an aggregation, a
    window) may override ``finish()`` to emit what it holds once its input has ended.
    """

    # The hooks are typed so that an override may be ``async def`` or plain ``def``: the
    # runtime awaits what they return only if it is awaitable.
    def setup(self) -> Awaitable[None] | None:
        """Prepare resources. The default calls ``pre_message()`` if the subclass has one.

        Override it as ``async def`` or plain ``def``."""
        return _call_hook(self, "pre_message")

    def teardown(self) -> Awaitable[None] | None:
        """Release resources. The default calls ``pos_message()`` if the subclass has one.

        Override it as ``async def`` or plain ``def``."""
        return _call_hook(self, "pos_message")

    async def __aenter__(self) -> Self:
        """``async with handler:`` runs ``setup()`` and, on the way out, ``teardown()``
        (for using a handler outside a pipeline, e.g. a sink in a script or a test)."""
        await _call_hook(self, "setup")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await _call_hook(self, "teardown")

    def handle(self, data: Any) -> Any:
        """Process one message; return the message to emit, or ``None`` to emit nothing.

        Override it as ``async def`` or plain ``def`` (or a generator of either kind)."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement handle(data)")

    def finish(self) -> Any:
        """Called once, after the last message, when every input has ended (not for
        ``cpu=True`` nodes, whose state lives in the workers). Return a last message to
        emit, or None (``async def`` or plain); a generator (of either kind) may yield
        several. What a sink's ``finish()`` returns goes nowhere. Its failure is handled
        like a message's (dead-lettered by default)."""
        return None


async def _call_hook(handler: object, name: str) -> None:
    hook = getattr(handler, name, None)
    if hook is not None:
        result = hook()
        if inspect.isawaitable(result):
            await result


# -- per-item rejection ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rejection:
    """One item a handler refused, with the reason (becomes a dead letter)."""

    payload: Any
    reason: str
    index: int | None = None
    origin: str | None = None


_rejections: contextvars.ContextVar[list[Rejection] | None] = contextvars.ContextVar(
    "asyncpipe_rejections", default=None
)


def reject(item: Any, reason: str, *, index: int | None = None, origin: str | None = None) -> None:
    """Dead-letter one item of the message being handled, with a reason.

    Call it from inside a handler (also in ``cpu=True`` worker processes) for an item that
    is invalid while the rest of the batch is fine; drop the item from what the handler
    returns. ``index`` is the item's position in the incoming batch, reported back to the
    submitter through its receipt. ``origin`` names the input the item came from, stably
    across replays (a source's file path, say); by default the dead letter takes the
    submitted message's origin (``submit(..., origin=)``). Dead-letter sinks keep one
    letter per (node, origin, index), so a replayed input is not dead-lettered twice.

    Raises ``RuntimeError`` when called outside a handler.
    """
    sink = _rejections.get()
    if sink is None:
        raise RuntimeError("reject() called outside a handler")
    sink.append(Rejection(item, reason, index, origin))


def collect_rejections(sink: list[Rejection] | None = None) -> list[Rejection]:
    """Start collecting rejections in the current context (into ``sink``, or a new list)
    and return the (live) list."""
    if sink is None:
        sink = []
    _rejections.set(sink)
    return sink


@contextlib.contextmanager
def rejections_into(sink: list[Rejection]) -> Iterator[list[Rejection]]:
    """Collect what :func:`reject` rejects inside the block into ``sink`` -- for a
    handler handling several messages at once (``handle_group``), each message's apart."""
    token = _rejections.set(sink)
    try:
        yield sink
    finally:
        _rejections.reset(token)


class NotifyingRejections(list[Rejection]):
    """A rejection list that sets ``arrived`` on every append (for sources, whose
    rejections are written while the source is still waiting for its next item)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = asyncio.Event()

    def append(self, rejection: Rejection) -> None:
        super().append(rejection)
        self.arrived.set()


# -- adapting what the user passed ------------------------------------------------------


class Kind(enum.Enum):
    SYNC = "sync"
    ASYNC = "async"
    SYNC_GEN = "generator"
    ASYNC_GEN = "async generator"


@dataclass(frozen=True, slots=True)
class Adapted:
    """A handler in the one shape the runtime calls."""

    call: Callable[[Any], Any]
    kind: Kind
    obj: Any  # what the user passed: pickled for cpu nodes, set up and torn down
    label: str  # module.qualname:line, for error messages

    @property
    def streams(self) -> bool:
        return self.kind in (Kind.SYNC_GEN, Kind.ASYNC_GEN)


def describe(obj: Any) -> str:
    """Name a user's callable as module.qualname:line (or its repr)."""
    target = obj if inspect.isroutine(obj) else type(obj)
    target = inspect.unwrap(target)
    name = getattr(target, "__qualname__", None) or repr(obj)
    module = getattr(target, "__module__", None)
    code = getattr(target, "__code__", None)
    line = f":{code.co_firstlineno}" if code is not None else ""
    return f"{module}.{name}{line}" if module else f"{name}{line}"


def adapt(obj: Any) -> Adapted:
    """Wrap a handler object or function; raise TypeError if it is neither."""
    if isinstance(obj, BaseHandler) or (
        not inspect.isroutine(obj) and callable(getattr(obj, "handle", None))
    ):
        fn = obj.handle
    elif callable(obj):
        fn = obj
    else:
        raise TypeError(f"not a handler: {obj!r} (expected a BaseHandler, function or source)")
    return Adapted(call=fn, kind=_kind_of(fn), obj=obj, label=describe(obj))


def _kind_of(fn: Callable[..., Any]) -> Kind:
    probe: Any = fn
    if not (inspect.isroutine(fn) or isinstance(fn, types.MethodType | functools.partial)):
        probe = type(fn).__call__  # a callable object: look at its __call__
    if inspect.isasyncgenfunction(probe):
        return Kind.ASYNC_GEN
    if inspect.iscoroutinefunction(probe):
        return Kind.ASYNC
    if inspect.isgeneratorfunction(probe):
        return Kind.SYNC_GEN
    return Kind.SYNC


def as_source(obj: Any) -> Callable[[], AsyncIterator[Any]] | None:
    """If ``obj`` is a source (produces messages by itself), return a factory for its
    async iterator; otherwise None."""
    if isinstance(obj, BaseHandler):
        return None
    if isinstance(obj, AsyncIterable):
        return lambda: aiter(obj)
    if isinstance(obj, Iterable) and not isinstance(obj, str | bytes | dict) and not callable(obj):
        return lambda: _iterate(obj)
    if callable(obj) and _takes_no_arguments(obj):

        def factory() -> AsyncIterator[Any]:
            produced = obj()
            if isinstance(produced, AsyncIterable):
                return aiter(produced)
            if isinstance(produced, Iterable):
                return _iterate(produced)
            raise TypeError(
                f"source {describe(obj)} returned {type(produced).__name__}, "
                "expected an iterable or async iterable"
            )

        return factory
    return None


def _takes_no_arguments(fn: Callable[..., Any]) -> bool:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    # A function that can take a positional argument (required, optional or *args) is a
    # handler; only one that takes none is a source.
    return not any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        for p in signature.parameters.values()
    )


async def _iterate(items: Iterable[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item
