"""The exceptions asyncpipe raises.

Hierarchy::

    AsyncpipeError
    ├── GraphError           the pipeline description is invalid (raised before anything runs)
    ├── ChannelClosed        a put into a channel that no longer accepts items
    │   └── PipelineClosed   a submit() into a pipeline that is not accepting input
    ├── EndOfStream          a get() from a channel that is closed and drained (a signal,
    │                        like StopIteration: iteration ends)
    ├── HandlerError         a handler failed under the fail-fast policy (carries the node name)
    │   ├── HandlerSetupError  a handler's setup() failed: its node cannot run
    │   └── WorkerCrashed    the worker process running a handler died
    ├── PipelineAborted      the pipeline was aborted; outstanding receipts fail with it
    ├── ConversionError      a text field its column's converter rejected (also a
    │                        ValueError); connectors make the record a dead letter
    └── RecordsRefused       records of a batch that cannot be SQL rows; the SQLite sink
                             takes them one by one (never reaches the user)

Bad arguments to constructors stay ``ValueError`` / ``TypeError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "AsyncpipeError",
    "ChannelClosed",
    "ConversionError",
    "EndOfStream",
    "GraphError",
    "HandlerError",
    "HandlerSetupError",
    "PipelineAborted",
    "PipelineClosed",
    "RecordsRefused",
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


class EndOfStream(AsyncpipeError):
    """Raised by :meth:`Channel.get` once the channel is closed and drained."""

    # No __init__: Channel.get() raises the bare class at the end of every stream.


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


class ConversionError(AsyncpipeError, ValueError):
    """A field its column's converter rejected (the message names column and value)."""

    def __init__(
        self, column: str, value: str, converter: Callable[[str], Any], cause: Exception
    ) -> None:
        name = getattr(converter, "__name__", None) or repr(converter)
        super().__init__(f"column {column!r}: cannot convert {value!r} with {name}: {cause}")
        #: Name of the column whose converter failed.
        self.column = column


class RecordsRefused(AsyncpipeError):
    """Some records of a batch cannot be converted to rows (a record that is not a
    mapping, a missing column or key): the caller takes the one-by-one path."""
