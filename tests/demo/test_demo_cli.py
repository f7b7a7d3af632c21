"""``python -m asyncpipe.demo`` as a user runs it: --verify, and --serve with gRPC."""

from __future__ import annotations

import asyncio
import random
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from demo_helpers import AS_OF

from asyncpipe.demo._domain import cpf_digits
from asyncpipe.demo.service import BankClient

SMALL_ARGS = ["--clients", "200", "--transactions", "1000", "--new", "400", "--as-of", AS_OF]


def demo(workdir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "asyncpipe.demo", "--workdir", str(workdir), *SMALL_ARGS, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_verify_runs_the_demo_and_finds_no_difference(tmp_path: Path) -> None:
    proc = demo(tmp_path, "--verify", "--quiet")
    out, err = await asyncio.to_thread(proc.communicate, timeout=50)
    assert proc.returncode == 0, err
    assert "verify: every table equals the reference" in out
    assert (tmp_path / "out" / "pipeline.mmd").read_text().startswith("flowchart LR")


def valid_cpf() -> str:
    rng = random.Random(3)
    while True:
        candidate = "".join(str(rng.randrange(10)) for _ in range(11))
        if cpf_digits(candidate):
            return candidate


def profile(db: Path, client_id: int) -> dict[str, Any] | None:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        row = conn.execute("SELECT * FROM client_profiles WHERE client_id = ?", (client_id,))
        found = row.fetchone()
        return dict(found) if found else None
    finally:
        conn.close()


async def test_serve_ingests_over_grpc_and_the_profile_changes_then_drains(
    tmp_path: Path,
) -> None:
    proc = demo(tmp_path, "--serve", "--port", "0", "--quiet")
    try:
        assert proc.stdout is not None
        address = None
        async with asyncio.timeout(40):
            while address is None:
                line = await asyncio.to_thread(proc.stdout.readline)
                assert line, f"the demo ended before serving: {proc.stderr and proc.stderr.read()}"
                found = re.search(r"gRPC on (127\.0\.0\.1:\d+)", line)
                address = found.group(1) if found else None
            results = tmp_path / "out" / "results.db"
            async with BankClient(address, timeout=20) as client:
                reply = await client.send_clients(
                    [
                        {
                            "id": 99_999,
                            "name": "  maria   José ",
                            "cpf": valid_cpf(),
                            "birth_date": "1990-01-01",
                            "address": "Rua das Flores, 10",
                        }
                    ],
                    batch_id="c",
                )
                assert reply.success and reply.items_processed == 1, reply
                before = profile(results, 99_999)
                assert before is not None
                assert (before["balance"], before["tx_30d"]) == (0.0, 0)
                reply = await client.send_transactions(
                    [
                        {
                            "id": 9_000_001,
                            "client_id": 99_999,
                            "date": AS_OF,
                            "amount": 5000.0,
                            "currency": "BRL",
                            "description": "SALARIO ACME",
                        }
                    ],
                    batch_id="t",
                )
                assert reply.success and reply.items_processed == 1, reply
            after = profile(results, 99_999)  # answered after commit: already there
            assert after is not None
            assert (after["balance"], after["tx_30d"], after["income_avg"]) == (5000.0, 1, 5000.0)
            conn = sqlite3.connect(results)
            name = conn.execute("SELECT name FROM clients WHERE id = 99999").fetchone()
            conn.close()
            assert name == ("MARIA JOSE",)
            proc.send_signal(signal.SIGINT)
            out, err = await asyncio.to_thread(proc.communicate)
        assert proc.returncode == 0, err
        assert "input rows" in out and "dead letters" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
