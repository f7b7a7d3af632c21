"""The gRPC ingestion service: batches of clients, transactions and scores into a pipeline.

The protocol is ``proto/asyncpipe/ingest/v1/ingest.proto``; its generated Python modules
live in :mod:`asyncpipe.ingest.v1`. :class:`IngestServer` feeds a running
:class:`asyncpipe.PipelineExecutor` and answers each batch from its receipt;
:class:`IngestClient` sends batches and retries those not acknowledged; :func:`serve`
runs a pipeline and its server until SIGINT/SIGTERM.
"""

try:
    import grpc  # noqa: F401  (every module below needs it; the core install has none)
except ImportError as error:
    raise ImportError(
        "asyncpipe.ingest needs the grpc extra: pip install 'asyncpipe[grpc]'"
    ) from error

from .._exports import claim_module as _claim_module
from ._client import (
    RETRYABLE,
    IngestClient,
    IngestStream,
    client_batch,
    new_batch_id,
    score_batch,
    transaction_batch,
)
from ._intake import Ack
from ._records import (
    DEFAULT_CURRENCIES,
    MAX_AMOUNT,
    Converted,
    client_records,
    cpf_digits,
    is_valid_cpf,
    score_records,
    transaction_records,
)
from ._server import SERVICE_NAME, IngestServer, serve

__all__ = [
    "DEFAULT_CURRENCIES",
    "MAX_AMOUNT",
    "RETRYABLE",
    "SERVICE_NAME",
    "Ack",
    "Converted",
    "IngestClient",
    "IngestServer",
    "IngestStream",
    "client_batch",
    "client_records",
    "cpf_digits",
    "is_valid_cpf",
    "new_batch_id",
    "score_batch",
    "score_records",
    "serve",
    "transaction_batch",
    "transaction_records",
]

_claim_module(globals(), __all__, __name__)
