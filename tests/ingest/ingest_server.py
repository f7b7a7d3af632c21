"""An ingestion server storing transactions in SQLite, in its own process, for the
shutdown and crash tests.

Usage: ``python ingest_server.py DB [PORT]``. Writes ``PORT <n>`` once it serves; on
SIGTERM it stops gracefully and exits 0.
"""

from __future__ import annotations

import logging
import sys

from ingest_pipeline import BANK_NODES, bank_pipeline

from asyncpipe import run
from asyncpipe.demo.service import bank_server
from asyncpipe.ingest import IngestServer, serve


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    db = sys.argv[1]
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    server = bank_server(bank_pipeline(db), **BANK_NODES, port=port)

    def ready(server: IngestServer) -> None:
        sys.stdout.write(f"PORT {server.port}\n")
        sys.stdout.flush()

    run(serve(server, grace=20, on_ready=ready))


if __name__ == "__main__":
    main()
