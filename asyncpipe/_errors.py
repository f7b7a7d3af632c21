"""The exceptions asyncpipe raises.

Hierarchy::

    AsyncpipeError
    ├── GraphError           the pipeline description is invalid (raised before anything runs)
    ├── ChannelClosed        a put into a channel that no longer accepts items
    │   └── PipelineClosed   a submit() into a pipeline that is not accepting input
    ├── HandlerError         a handler failed under the fail-fast policy (carries the node name)
    │   ├── HandlerSetupError  a handler's setup() failed: its node cannot run
    │   └── WorkerCrashed    the worker process running a handler died
    └── PipelineAborted      the pipeline was aborted; outstanding receipts fail with it

Bad arguments to constructors stay ``ValueError`` / ``TypeError``.
"""

from __future__ import annotations

__all__ = [
    "AsyncpipeError",
    "ChannelClosed",
    "GraphError",
    "HandlerError",
    "HandlerSetupError",
    "PipelineAborted",
    "PipelineClosed",
    "WorkerCrashed",
]


class AsyncpipeError(Exception):
    """Base class of every exception raised by asyncpipe."""


class GraphError(AsyncpipeError):
    """The pipeline graph is invalid: duplicate or unknown nodes, cycles, missing inputs."""

    def __init__(self, message: str, nodes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        #: Names of the nodes involved, in the order the message mentions them.
        self.nodes = nodes


class ChannelClosed(AsyncpipeError):
    """The channel was closed: it accepts no more items."""


class PipelineClosed(ChannelClosed):
    """The pipeline is not accepting input (not started yet, stopping, or finished)."""


class HandlerError(AsyncpipeError):
    """A handler raised and its node's error policy is fail-fast.

    The original exception is chained as ``__cause__``.
    """

    def __init__(self, node: str, message: str) -> None:
        super().__init__(f"node {node!r}: {message}")
        #: Name of the node whose handler failed.
        self.node = node


class HandlerSetupError(HandlerError):
    """A handler's ``setup()`` failed, on the event loop or in a worker process.

    The node cannot run, so the pipeline stops whatever the node's error policy.
    """


class WorkerCrashed(HandlerError):
    """The worker process running the handler died (e.g. ``os._exit`` or a segfault)."""


class PipelineAborted(AsyncpipeError):
    """The pipeline was aborted before this message reached a terminal point."""
