"""``--serve --processes N``: N server processes sharing the gRPC port, each running its
own pipeline over the same work directory (docs/processes.md).

The supervisor (:func:`asyncpipe.ingest.serve_processes`) starts the children, restarts
one that crashes and stops them all on SIGINT/SIGTERM. Each child builds the pipeline
with the state store in shared mode (``DemoConfig.processes > 1``); only child 0 runs the
start-up sources -- the input database, the timer, the inbox watchers -- so the start-up
load happens once (a restarted child 0 resumes it from its ``.fed-*`` markers and inbox
manifests, as a restarted single server does).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys

from rich.console import Console

from ..ingest import IngestServer, serve_processes, server_index
from ._pipeline import DemoConfig, build_pipeline, ingest_server

__all__ = ["serve_in_processes"]


def _server(
    config: DemoConfig, model: bytes, host: str, level: int, switch: float, port: int
) -> IngestServer:
    """In a child: its pipeline and gRPC server (start-up sources in child 0 only)."""
    sys.setswitchinterval(switch)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = dataclasses.replace(config, startup=server_index() in (0, None))
    executor = build_pipeline(config, model)
    return ingest_server(executor, config, host=host, port=port)


async def serve_in_processes(
    config: DemoConfig,
    model: bytes,
    *,
    host: str,
    port: int,
    console: Console,
    level: int,
    switch: float,
) -> None:
    """Serve the bank with ``config.processes`` server processes until SIGINT/SIGTERM."""

    def ready(addresses: list[str]) -> None:
        console.print(
            f"[bold]serving[/] gRPC on {addresses[0]} with {len(addresses)} server "
            f"processes, watching {config.workdir / 'inbox'} (process 0); Ctrl-C to drain "
            "and stop"
        )

    build = functools.partial(_server, config, model, host, level, switch)
    await serve_processes(build, processes=config.processes, host=host, port=port, on_ready=ready)
