"""Wiring a validated graph for a run: a channel per node input, a runtime per node, the
process pools, the intake and the resources -- everything built before the event loop runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._attempt import DeadLetterWriter
from ._channel import Channel
from ._deadletter import DeadLetterSink
from ._errors import PipelineClosed
from ._graph import Graph
from ._intake import Intake
from ._metrics import NodeMetrics, NodeStats
from ._node import NodeRuntime
from ._offload import Pool, make_pool
from ._outputs import Envelope
from ._resources import Resources
from ._rows import rows_factory
from ._source import SourceRuntime

__all__ = ["Wiring"]


class Wiring:
    """The runtimes of a graph's nodes and what they share.

    Offloaded (``cpu=True``) nodes share one pool (over ``executor``, or a process pool of
    ``max_workers`` asyncpipe owns); a node given its own executor (or Dask client) gets a
    pool over it, shared with the nodes given the same one. Handlers of offloaded nodes are
    pickled here, so one that cannot be pickled fails before anything runs.
    """

    def __init__(
        self,
        graph: Graph,
        *,
        sink: DeadLetterSink,
        write: DeadLetterWriter,
        refusal: Callable[[], PipelineClosed],
        max_workers: int,
        executor: object,
        pool_options: dict[str, Any],
        state_store: Any = None,
    ) -> None:
        inboxes: dict[str, Channel[Envelope]] = {
            name: Channel(node.capacity, name)
            for name, node in graph.nodes.items()
            if not node.is_source
        }
        self.graph = graph
        self.intake = Intake(inboxes, graph.order, refusal)
        self.nodes: dict[str, NodeRuntime] = {}
        self.sources: dict[str, SourceRuntime] = {}
        self.pools: list[Pool] = []
        pools: dict[int | None, Pool] = {}
        for name in graph.order:
            node = graph.nodes[name]
            outputs = [inboxes[dep] for dep in graph.dependents[name]]
            if node.source is not None:
                consumers = [graph.nodes[dep] for dep in graph.dependents[name]]
                self.sources[name] = SourceRuntime(
                    node,
                    outputs=outputs,
                    dead_letter=write,
                    track=self.intake.track,
                    factory=rows_factory(node.source_object, consumers),
                )
                continue
            pool = None
            if node.cpu:
                key = None if node.executor is None else id(node.executor)
                pool = pools.get(key)
                if pool is None:
                    given = node.executor or executor
                    pool = pools[key] = make_pool(given, max_workers=max_workers, **pool_options)
                    self.pools.append(pool)
            self.nodes[name] = NodeRuntime(
                node,
                inbox=inboxes[name],
                outputs=outputs,
                pool=pool,
                dead_letter=write,
                state_store=state_store,
            )
        on_loop = [
            (name, rt.node.handler.obj)
            for name, rt in self.nodes.items()
            if rt.node.handler is not None and not rt.node.cpu
        ]
        stateful = any(node.node.stateful is not None for node in self.nodes.values())
        self.resources = Resources(sink, on_loop, self.pools, state_store if stateful else None)

    def connect(self) -> None:
        """Count the senders of every input: the intake and each upstream node."""
        self.intake.connect()
        for name, node in self.nodes.items():
            for _ in self.graph.inputs[name]:
                node.inbox.add_sender()

    def abort_inputs(self) -> None:
        """Make every input refuse and drop messages (the run is over)."""
        for node in self.nodes.values():
            node.inbox.abort()

    def queued(self) -> int:
        return sum(len(node.inbox) for node in self.nodes.values())

    def stats(self) -> list[NodeStats]:
        return [rt.stats for rt in self.sources.values()] + [rt.stats for rt in self.nodes.values()]

    def metrics(self) -> dict[str, NodeMetrics]:
        """A snapshot of every node, in the graph's order."""
        snapshot = {}
        for name in self.graph.order:
            node = self.nodes.get(name)
            if node is not None:
                snapshot[name] = NodeMetrics.of(
                    name, node.stats, node.workers, node.inbox.statistics()
                )
            else:
                snapshot[name] = NodeMetrics.of(name, self.sources[name].stats, 1, None)
        return snapshot

    def stats_of(self, name: str) -> NodeStats | None:
        runtime: NodeRuntime | SourceRuntime | None = self.nodes.get(name) or self.sources.get(name)
        return None if runtime is None else runtime.stats
