"""Prometheus metrics of a running pipeline and of its gRPC ingestion server.

:func:`serve_metrics` serves them over HTTP on a port of the caller's choosing::

    endpoint = serve_metrics(executor, 9464, server=ingest_server)
    # curl http://127.0.0.1:9464/metrics

The collectors (:class:`PipelineCollector`, :class:`IngestCollector`) read the counters the
executor and the server keep anyway -- ``executor.metrics()`` and ``server.metrics()``,
taken on their event loop at scrape time -- so the figures a scrape shows are the ones
those snapshots give, and nothing is counted twice on the hot path. Add them to a
registry of your own to serve them with the rest of an application's metrics.
See ``docs/metrics.md`` for the metric names.
"""

from importlib.util import find_spec as _find_spec

if _find_spec("prometheus_client") is None:
    raise ImportError(
        "asyncpipe.metrics needs the metrics extra: pip install 'asyncpipe[metrics]'"
    ) from ModuleNotFoundError("No module named 'prometheus_client'", name="prometheus_client")

from .._exports import claim_module as _claim_module
from ._collector import IngestCollector, PipelineCollector
from ._http import MetricsServer, metrics_registry, serve_metrics

__all__ = [
    "IngestCollector",
    "MetricsServer",
    "PipelineCollector",
    "metrics_registry",
    "serve_metrics",
]

_claim_module(globals(), __all__, __name__)
