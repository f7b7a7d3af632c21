"""Helpers shared by the ingestion tests: data, a served pipeline, a server process."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingest_pipeline import BANK_NODES

from asyncpipe import PipelineExecutor
from asyncpipe.demo.service import BankClient, bank_server
from asyncpipe.ingest import IngestServer

TIMEOUT = 20.0  # seconds any one test's pipeline and calls may take
SERVER_SCRIPT = Path(__file__).parent / "ingest_server.py"


def make_cpf(rng: random.Random) -> str:
    """A valid CPF (11 digits with correct check digits)."""
    while True:
        base = [rng.randrange(10) for _ in range(9)]
        if len(set(base)) > 1:
            break
    for weight in (10, 11):
        total = sum(d * w for d, w in zip(base, range(weight, 1, -1), strict=False))
        base.append(total * 10 % 11 % 10)
    return "".join(map(str, base))


def transactions(count: int, start: int = 1) -> list[dict[str, Any]]:
    """``count`` valid transactions with ids ``start``, ``start + 1``..."""
    return [
        {
            "id": i,
            "client_id": 1 + i % 50,
            "date": f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}",
            "amount": round(10 + (i * 7.31) % 990, 2),
            "currency": ("BRL", "USD", "EUR")[i % 3],
            "description": f"compra {i}",
            "category": "Compras" if i % 2 else None,
        }
        for i in range(start, start + count)
    ]


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    """Read on a separate connection (what another process would see)."""
    if not db.exists():
        return []
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # the table does not exist yet
        return []
    finally:
        conn.close()


@dataclass
class Served:
    executor: PipelineExecutor
    server: IngestServer
    client: BankClient


@contextlib.asynccontextmanager
async def serving(
    executor: PipelineExecutor, *, client_options: dict[str, Any] | None = None, **options: Any
) -> AsyncIterator[Served]:
    """Run ``executor`` with the bank's service on 127.0.0.1 (ephemeral port; each kind of
    batch to the node of its name unless ``options`` say otherwise) and a client; on
    leaving, stop the server gracefully, then drain the pipeline."""
    async with asyncio.timeout(TIMEOUT):
        async with executor:
            server = bank_server(executor, **{**BANK_NODES, **options})
            await server.start()
            await server.ready.wait()  # health says SERVING
            client = BankClient(server.address, **(client_options or {}))
            try:
                yield Served(executor, server, client)
            finally:
                await client.close()
                await server.stop(grace=5)


class ServerProcess:
    """``ingest_server.py`` in its own process; ``port`` once it serves."""

    def __init__(self, db: Path, port: int = 0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER_SCRIPT), str(db), str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.port = 0

    async def ready(self) -> int:
        assert self.proc.stdout is not None
        line = await asyncio.to_thread(self.proc.stdout.readline)
        if not line.startswith("PORT "):
            _, err = await asyncio.to_thread(self.proc.communicate)
            raise RuntimeError(f"server did not start: {line!r}\n{err}")
        self.port = int(line.split()[1])
        return self.port

    async def wait(self) -> tuple[int, str]:
        _, err = await asyncio.to_thread(self.proc.communicate)
        return self.proc.returncode, err

    def kill(self) -> None:
        """SIGKILL (if still running), reap, close the pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()
