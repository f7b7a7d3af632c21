"""Several ingestion server processes on one port, storing transactions in one SQLite
file, for the multi-process tests.

Usage: ``python multi_server.py DB PROCESSES``. Logs each child's start, index and serving
(with its pid) to stderr; writes ``SERVING <address>`` on stdout once all serve; on SIGTERM all
stop gracefully and it exits 0.
"""

from __future__ import annotations

import functools
import logging
import os
import sys

from ingest_pipeline import BANK_NODES, bank_pipeline

from asyncpipe import run
from asyncpipe.demo.service import bank_server
from asyncpipe.ingest import IngestServer, serve_processes, server_index


def build(db: str, port: int) -> IngestServer:
    """One child's server (picklable as a partial: children are spawned); it says which
    child it is on stderr."""
    sys.stderr.write(f"child index {server_index()} pid {os.getpid()}\n")
    sys.stderr.flush()
    return bank_server(bank_pipeline(db), **BANK_NODES, host="127.0.0.1", port=port)


def ready(addresses: list[str]) -> None:
    assert len(set(addresses)) == 1, addresses  # one port, shared
    sys.stdout.write(f"SERVING {addresses[0]}\n")
    sys.stdout.flush()


async def main(db: str, processes: int) -> None:
    await serve_processes(functools.partial(build, db), processes=processes, on_ready=ready)


def broken_build(port: int) -> IngestServer:
    """A child whose server cannot be built."""
    raise RuntimeError(f"no server on port {port} today")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    run(main(sys.argv[1], int(sys.argv[2])))
