"""Generic gRPC ingestion: batches of any protobuf service pushed into a pipeline.

:class:`IngestServer` serves a service of the application's (a ``ServiceDescriptor`` from
its generated ``*_pb2`` module) into a running :class:`asyncpipe.PipelineExecutor`: per
method a :class:`Route` names the producer node and converts each item to a record (or an
:class:`Invalid` with the reason), and each batch is answered from its receipt.
:class:`IngestClient` sends batches to such a server and retries those not acknowledged;
:func:`serve` runs a pipeline and its server until SIGINT/SIGTERM. The bank demo's
service is one user of it (:mod:`asyncpipe.demo.service`); ``demo/own_proto/`` another.
"""

from importlib.util import find_spec as _find_spec

if _find_spec("grpc") is None:
    raise ImportError(
        "asyncpipe.ingest needs the grpc extra: pip install 'asyncpipe[grpc]'"
    ) from ModuleNotFoundError("No module named 'grpc'", name="grpc")

from .._exports import claim_module as _claim_module
from ._client import RETRYABLE, IngestClient, IngestStream, new_batch_id
from ._intake import Ack
from ._processes import serve_processes, server_index
from ._routes import Invalid, Route, quoted
from ._server import IngestServer, serve
from ._stats import MethodMetrics, ServerMetrics

__all__ = [
    "RETRYABLE",
    "Ack",
    "IngestClient",
    "IngestServer",
    "IngestStream",
    "Invalid",
    "MethodMetrics",
    "Route",
    "ServerMetrics",
    "new_batch_id",
    "quoted",
    "serve",
    "serve_processes",
    "server_index",
]

_claim_module(globals(), __all__, __name__)
