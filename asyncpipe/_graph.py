"""Describing a pipeline: nodes, their dependencies, and validation.

A graph is a plain description: building and validating it needs no event loop. Running it
is :class:`asyncpipe.PipelineExecutor`'s job.
"""

from __future__ import annotations

import enum
import operator
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from ._errors import GraphError
from ._handler import Adapted, adapt, as_source, describe
from ._keys import KeyFunction
from ._offload import PoolFactory, is_offload_target

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["DEFAULT_CAPACITY", "ErrorPolicy", "Graph", "HandlerNode"]

#: Default capacity of a node's input channel, in messages. Large enough that a stage
#: rarely waits on a task switch, small enough that batches of hundreds of records stay
#: within a few MB per edge.
DEFAULT_CAPACITY = 128


class ErrorPolicy(enum.StrEnum):
    """What a node does with a message whose handler still fails after its retries."""

    DEAD_LETTER = "dead_letter"  #: send it to the dead-letter sink and go on (default)
    SKIP = "skip"  #: log it, count it, drop it and go on
    FAIL = "fail"  #: stop the pipeline; run() raises HandlerError


class HandlerNode:
    """One step of a pipeline.

    Args:
        name: unique name; it appears in task names, logs, metrics and errors.
        handler: what the node does (see :mod:`asyncpipe` for accepted shapes). A node
            without dependencies may instead be given a *source* (an async iterable, an
            iterable, or a function of no arguments returning one), whose items it emits.
            ``None`` makes an identity node, e.g. an ingress fed by ``submit()``.
        dependencies: upstream nodes (or their names). With several, the node receives the
            merged stream of all of them; every dependent of a node receives every output.
        parallel: split each list message into ``chunks`` chunks, handle them concurrently
            (in the process pool for ``cpu=True`` nodes) and re-assemble the results in order.
        chunks: number of chunks for ``parallel=True``.
        workers: concurrent handler calls; default 1, or twice the pool size for ``cpu=True``.
        ordered: with ``workers > 1``, emit in input order (default) or as completed.
        capacity: bound of the node's input channel, in messages.
        cpu: run the handler in worker processes (the pipeline's process pool).
        executor: where to run the handler instead of the pipeline's process pool (implies
            offloading): a ``concurrent.futures.Executor`` (asyncpipe does not shut it
            down), a Dask ``Client`` or an :class:`asyncpipe.dask.DaskExecutor` (the
            handler then runs on the Dask cluster's workers, see ``docs/dask.md``).
        retries: extra attempts after a failure; ``backoff`` seconds before the first,
            doubling up to ``max_backoff``.
        on_error: :class:`ErrorPolicy` once retries are exhausted.
        isolate_failures: when a list message still fails after its retries, handle it
            again in halves, down to single items, so the items that succeed go on and
            only the failing ones are dead-lettered (or skipped), each with its own error
            and index. Default: on for ``on_error="dead_letter"``, off otherwise; not
            possible with ``on_error="fail"``.
        key: a function of a record returning its key, or the name of the field that
            holds it (``key="client_id"``). Each list message is split by the
            key of its records (a message that is not a list is one record) and each part
            goes to one of the node's ``workers`` lanes, chosen by
            :func:`asyncpipe.state.stable_hash` of the key: one key is always handled by
            one lane, one message at a time, in arrival order (outputs of different keys
            may overtake each other). Receipts follow every part. Stateful handlers
            (:mod:`asyncpipe.state`) keep their state per key.
    """

    def __init__(
        self,
        name: str,
        handler: Any = None,
        dependencies: Iterable[HandlerNode | str] = (),
        *,
        parallel: bool = False,
        chunks: int = 4,
        workers: int | None = None,
        ordered: bool = True,
        capacity: int = DEFAULT_CAPACITY,
        cpu: bool = False,
        executor: Executor | PoolFactory | Client | None = None,
        retries: int = 0,
        backoff: float = 0.1,
        max_backoff: float = 10.0,
        on_error: ErrorPolicy | str = ErrorPolicy.DEAD_LETTER,
        isolate_failures: bool | None = None,
        key: KeyFunction | str | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"node name must be a non-empty string, got {name!r}")
        _check_options(name, executor, chunks, capacity, workers, (retries, backoff, max_backoff))
        try:
            self.on_error = ErrorPolicy(on_error)
        except ValueError:
            choices = ", ".join(repr(p.value) for p in ErrorPolicy)
            raise ValueError(f"node {name!r}: on_error must be one of {choices}") from None
        if isolate_failures and self.on_error is ErrorPolicy.FAIL:
            raise ValueError(
                f"node {name!r}: isolate_failures=True needs on_error='dead_letter' or 'skip' "
                "(a fail-fast node stops at the first failure)"
            )
        self.isolate_failures = (
            self.on_error is ErrorPolicy.DEAD_LETTER
            if isolate_failures is None
            else isolate_failures
        )

        self.name = name
        self.dependencies: tuple[HandlerNode | str, ...] = tuple(dependencies)
        self.source, self.handler = _source_or_handler(name, handler)
        #: The source object as given (it may offer rows of values: see ``_rows``).
        self.source_object: Any = handler if self.source is not None else None
        if self.source is not None and self.dependencies:
            raise GraphError(
                f"node {name!r} is a source ({describe(handler)}) and cannot have dependencies",
                (name,),
            )
        self.parallel = parallel
        self.chunks = chunks
        self.ordered = ordered
        self.capacity = capacity
        self.executor = executor
        self.cpu = cpu or executor is not None
        self.workers = workers
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        #: The field ``key=`` names, when it names one (stateful handlers read it inline).
        self.key_field = key if isinstance(key, str) else None
        self.key: KeyFunction | None = _key_function(name, key)
        #: A stateful handler's lane factory (see asyncpipe.state), else None.
        self.stateful = None if self.handler is None else stateful_lanes(self.handler.obj)
        if self.stateful is not None:
            _check_stateful(self)
        if self.cpu and self.handler is None:
            raise ValueError(f"node {name!r}: cpu=True needs a handler to run")
        if parallel and (self.handler is None or self.handler.streams):
            raise ValueError(
                f"node {name!r}: parallel=True needs a handler that returns one list per "
                "chunk (not a generator, not a source)"
            )

    def __repr__(self) -> str:
        what = "source" if self.source else (self.handler.label if self.handler else "identity")
        return f"<HandlerNode {self.name!r} {what}>"

    @property
    def is_source(self) -> bool:
        return self.source is not None

    def dependency_names(self) -> list[str]:
        return [d if isinstance(d, str) else d.name for d in self.dependencies]

    def resolved_workers(self, pool_size: int) -> int:
        if self.workers is not None:
            return self.workers
        # Offloaded: two calls in flight per worker process, so each worker has its next
        # message ready while the previous result travels back.
        return 2 * pool_size if self.cpu else 1


def _source_or_handler(name: str, handler: Any) -> tuple[Callable[[], Any] | None, Adapted | None]:
    """What node ``name`` runs: a source factory, or an adapted handler (or neither).

    Raises TypeError naming the node for an object that is neither, and for a handler
    class given instead of an instance.
    """
    if isinstance(handler, type) and callable(getattr(handler, "handle", None)):
        # Double, not Double(): called with no argument the class would pass for a source,
        # with a message it would construct a handler per message.
        raise TypeError(
            f"node {name!r}: handler {handler.__qualname__} is a class; "
            f"pass an instance: {handler.__qualname__}()"
        )
    if handler is None:
        return None, None
    source = as_source(handler)
    if source is not None:
        return source, None
    try:
        return None, adapt(handler)
    except TypeError as exc:
        raise TypeError(f"node {name!r}: {exc}") from None


def stateful_lanes(handler: Any) -> Any:
    """The hook a stateful handler (``asyncpipe.state``) offers the runtime, or None."""
    return getattr(handler, "_asyncpipe_lanes", None)


def _check_stateful(node: HandlerNode) -> None:
    problems = [
        option
        for option, used in (
            ("cpu=True", node.cpu),
            ("parallel=True", node.parallel),
            ("retries", node.retries > 0),
            ("on_error='skip'", node.on_error is ErrorPolicy.SKIP),
        )
        if used
    ]
    if problems:
        raise ValueError(
            f"node {node.name!r}: a stateful handler runs on the event loop, one message at "
            f"a time per key; not possible with {', '.join(problems)}"
        )
    if node.key is None and (node.workers or 1) > 1:
        raise ValueError(f"node {node.name!r}: a stateful handler with workers > 1 needs key=")


def _check_options(
    name: str,
    executor: object,
    chunks: int,
    capacity: int,
    workers: int | None,
    retrying: tuple[int, float, float],
) -> None:
    """Refuse a node's out-of-range or mistyped options, naming the node."""
    if executor is not None and not is_offload_target(executor):
        raise TypeError(
            f"node {name!r}: executor= takes a concurrent.futures.Executor, a Dask "
            f"Client or an asyncpipe.dask.DaskExecutor, not {type(executor).__name__}"
        )
    _check_positive(name, chunks=chunks, capacity=capacity)
    if workers is not None:
        _check_positive(name, workers=workers)
    if min(retrying) < 0:
        raise ValueError(f"node {name!r}: retries, backoff and max_backoff must be >= 0")


def _key_function(name: str, key: KeyFunction | str | None) -> KeyFunction | None:
    """``key=`` as a function of a record (a field name becomes its getter)."""
    if isinstance(key, str):
        return operator.itemgetter(key)
    if key is not None and not callable(key):
        raise TypeError(
            f"node {name!r}: key must be a function of a record or a field name, got {key!r}"
        )
    return key


def _check_positive(node: str, **values: int) -> None:
    for key, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"node {node!r}: {key} must be an integer >= 1, got {value!r}")


class Graph:
    """A validated DAG of nodes.

    Raises :class:`GraphError` naming the nodes involved for duplicate names, producers
    with dependencies, consumers without input, dependencies that are not in the graph,
    and cycles.
    """

    def __init__(self, producers: Sequence[HandlerNode], consumers: Sequence[HandlerNode]) -> None:
        self.nodes: dict[str, HandlerNode] = {}
        for node in [*producers, *consumers]:
            if not isinstance(node, HandlerNode):
                raise TypeError(f"expected HandlerNode, got {node!r}")
            if node.name in self.nodes:
                raise GraphError(f"duplicate node name {node.name!r}", (node.name,))
            self.nodes[node.name] = node
        if not self.nodes:
            raise GraphError("a pipeline needs at least one node")
        for node in producers:
            if node.dependencies:
                raise GraphError(
                    f"producer {node.name!r} has dependencies "
                    f"({', '.join(node.dependency_names())}); list it in consumer_nodes",
                    (node.name,),
                )
        for node in consumers:
            if node.is_source:
                raise GraphError(f"source {node.name!r} must be a producer", (node.name,))
            if not node.dependencies:
                raise GraphError(
                    f"consumer {node.name!r} has no input: give it dependencies",
                    (node.name,),
                )
        self.inputs: dict[str, list[str]] = {}
        self.dependents: dict[str, list[str]] = {name: [] for name in self.nodes}
        for node in self.nodes.values():
            self.inputs[node.name] = self._resolve(node)
            for dep in self.inputs[node.name]:
                self.dependents[dep].append(node.name)
        self.order = self._topological_order()

    def _resolve(self, node: HandlerNode) -> list[str]:
        names: list[str] = []
        for dep in node.dependencies:
            name = dep if isinstance(dep, str) else dep.name
            known = self.nodes.get(name)
            if known is None or (isinstance(dep, HandlerNode) and known is not dep):
                raise GraphError(
                    f"node {node.name!r} depends on {name!r}, which is not in the pipeline "
                    "(add it to producer_nodes or consumer_nodes)",
                    (node.name, name),
                )
            if name in names:
                raise GraphError(f"node {node.name!r} lists {name!r} twice", (node.name, name))
            names.append(name)
        return names

    def _topological_order(self) -> list[str]:
        # Depth-first search keeping the current path, so a cycle can be reported in full.
        done: set[str] = set()
        order: list[str] = []
        for root in self.nodes:
            if root in done:
                continue
            path: list[str] = [root]
            on_path = {root}
            stack = [iter(self.inputs[root])]
            while stack:
                nxt = next(stack[-1], None)
                if nxt is None:
                    stack.pop()
                    finished = path.pop()
                    on_path.discard(finished)
                    done.add(finished)
                    order.append(finished)
                elif nxt in on_path:
                    cycle = [*path[path.index(nxt) :], nxt][::-1]
                    raise GraphError(f"cycle: {' -> '.join(cycle)}", tuple(cycle[:-1]))
                elif nxt not in done:
                    path.append(nxt)
                    on_path.add(nxt)
                    stack.append(iter(self.inputs[nxt]))
        return order

    def to_mermaid(self) -> str:
        """The DAG as a Mermaid flowchart (sources are stadiums, sinks cylinders, process
        pool nodes subroutines)."""
        ids = {name: f"n{i}" for i, name in enumerate(self.order)}
        lines = ["flowchart LR"]
        for name in self.order:
            node = self.nodes[name]
            label = _mermaid_label(node)
            if node.is_source:
                shape = f'(["{label}"])'
            elif not self.dependents[name]:
                shape = f'[("{label}")]'
            elif node.cpu:
                shape = f'[["{label}"]]'
            else:
                shape = f'["{label}"]'
            lines.append(f"    {ids[name]}{shape}")
        for name in self.order:
            for dep in self.inputs[name]:
                lines.append(f"    {ids[dep]} --> {ids[name]}")
        return "\n".join(lines) + "\n"


def _mermaid_label(node: HandlerNode) -> str:
    notes = []
    if node.cpu:
        notes.append("cpu")
    if node.workers and node.workers > 1:
        notes.append(f"workers={node.workers}")
    if node.key is not None:
        notes.append("keyed")
    if node.parallel:
        notes.append(f"chunks={node.chunks}")
    text = node.name.replace('"', "#quot;")
    return f"{text}<br/><small>{' '.join(notes)}</small>" if notes else text


def default_pool_size() -> int:
    return os.cpu_count() or 1
