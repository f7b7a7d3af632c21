"""The HTTP endpoint: a registry of asyncpipe's collectors served by prometheus_client.

prometheus_client's own server answers in threads of its own (a scrape never waits for
the pipeline's event loop to be free, and a slow scraper never holds it); the collectors
take their snapshots on the loop (see :mod:`._collector`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

from .._executor import PipelineExecutor
from ._collector import IngestCollector, PipelineCollector

if TYPE_CHECKING:
    from ..ingest import IngestServer

__all__ = ["MetricsServer", "metrics_registry", "serve_metrics"]

logger = logging.getLogger(__name__)


def metrics_registry(
    executor: PipelineExecutor, server: IngestServer | None = None, *, process: bool = True
) -> CollectorRegistry:
    """A new registry with ``executor``'s collector, ``server``'s if given, and (with
    ``process``) prometheus_client's process metrics (CPU seconds, memory, open files)."""
    registry = CollectorRegistry()
    registry.register(PipelineCollector(executor))
    if server is not None:
        registry.register(IngestCollector(server))
    if process:
        ProcessCollector(registry=registry)
    return registry


class MetricsServer:
    """A running metrics endpoint: ``http://host:port/metrics`` (any path answers).

    Made by :func:`serve_metrics`; :meth:`close` stops it (also on leaving a ``with`` or
    ``async with`` block)."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        #: The registry served.
        self.registry = registry
        self.host = host
        self._httpd, self._thread = start_http_server(port, addr=host, registry=registry)
        #: The port listened on (the one picked, for port 0).
        self.port: int = self._httpd.server_port
        self._closed = False
        self._lock = threading.Lock()
        logger.info("metrics on %s", self.url)

    def __repr__(self) -> str:
        return f"<MetricsServer {self.url}{' closed' if self._closed else ''}>"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop listening and wait for the server's thread (idempotent; blocks up to about
        half a second: from a coroutine, ``await asyncio.to_thread(server.close)``)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> MetricsServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.close)


def serve_metrics(
    executor: PipelineExecutor,
    port: int = 0,
    host: str = "127.0.0.1",
    *,
    server: IngestServer | None = None,
    process: bool = True,
) -> MetricsServer:
    """Serve ``executor``'s metrics (and ``server``'s, an :class:`IngestServer` feeding
    it) for Prometheus on ``host:port``; port 0 picks a free one (see
    :attr:`MetricsServer.port`). Returns at once, listening; the pipeline may start before
    or after. Raises ``OSError`` if the address cannot be bound.

    The registry served is :func:`metrics_registry`'s (``process``: include the process
    metrics). To serve them beside an application's own metrics instead, register
    :class:`PipelineCollector` and :class:`IngestCollector` in its registry."""
    return MetricsServer(metrics_registry(executor, server, process=process), host, port)
