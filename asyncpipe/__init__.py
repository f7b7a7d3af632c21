"""asyncpipe: an asyncio-native streaming/ETL framework.

A pipeline is a DAG of :class:`HandlerNode` s joined by bounded channels and run by a
:class:`PipelineExecutor`::

    from asyncpipe import BaseHandler, HandlerNode, PipelineExecutor

    class Double(BaseHandler):
        async def handle(self, data):
            return [x * 2 for x in data]

    src = HandlerNode("numbers", [[1, 2], [3, 4]])
    dbl = HandlerNode("double", Double(), dependencies=[src])
    out = HandlerNode("collect", print, dependencies=[dbl])
    await PipelineExecutor(producer_nodes=[src], consumer_nodes=[dbl, out]).run()
"""

from __future__ import annotations

from ._channel import Channel, ChannelStatistics, EndOfStream
from ._deadletter import DeadLetter, DeadLetterSink, MemoryDeadLetterSink
from ._errors import (
    AsyncpipeError,
    ChannelClosed,
    GraphError,
    HandlerError,
    HandlerSetupError,
    PipelineAborted,
    PipelineClosed,
    WorkerCrashed,
)
from ._executor import ExecutorState, PipelineExecutor
from ._exports import claim_module as _claim_module
from ._graph import DEFAULT_CAPACITY, ErrorPolicy, HandlerNode
from ._handler import BaseHandler, Rejection, reject
from ._metrics import LATENCY_BUCKETS, NodeMetrics, PipelineMetrics
from ._receipt import Outcome, Receipt, Tracked
from ._rows import Rows
from ._runner import install_signal_handlers, run

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_CAPACITY",
    "LATENCY_BUCKETS",
    "AsyncpipeError",
    "BaseHandler",
    "Channel",
    "ChannelClosed",
    "ChannelStatistics",
    "DeadLetter",
    "DeadLetterSink",
    "EndOfStream",
    "ErrorPolicy",
    "ExecutorState",
    "GraphError",
    "HandlerError",
    "HandlerNode",
    "HandlerSetupError",
    "MemoryDeadLetterSink",
    "NodeMetrics",
    "Outcome",
    "PipelineAborted",
    "PipelineClosed",
    "PipelineExecutor",
    "PipelineMetrics",
    "Receipt",
    "Rejection",
    "Rows",
    "Tracked",
    "WorkerCrashed",
    "install_signal_handlers",
    "reject",
    "run",
]

# Public objects report the package as their module.
_claim_module(globals(), __all__, __name__)
