"""``python -m asyncpipe.demo --serve --metrics-port 0``: the endpoint answers with live
per-node and gRPC figures, and the piped live table gives the gRPC line."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from demo_helpers import AS_OF
from scraping import scrape, value

from asyncpipe.demo.service import BankClient

SMALL_ARGS = ["--clients", "200", "--transactions", "1000", "--new", "400", "--as-of", AS_OF]
_METRICS = re.compile(r"metrics on (http://127\.0\.0\.1:\d+/metrics)")
_GRPC = re.compile(r"gRPC on (127\.0\.0\.1:\d+)")


def demo_server(workdir: Path) -> subprocess.Popen[str]:
    """The demo serving gRPC and metrics on free ports, its output piped (not --quiet)."""
    return subprocess.Popen(
        [sys.executable, "-m", "asyncpipe.demo", "--workdir", str(workdir), *SMALL_ARGS]
        + ["--serve", "--port", "0", "--metrics-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},  # rich wraps its lines at 80
    )


async def test_the_demo_server_serves_live_metrics_on_the_port_asked(tmp_path: Path) -> None:
    proc = demo_server(tmp_path)
    try:
        assert proc.stdout is not None
        url = address = None
        async with asyncio.timeout(40):
            while address is None:
                line = await asyncio.to_thread(proc.stdout.readline)
                assert line, f"the demo ended before serving: {proc.stderr and proc.stderr.read()}"
                url = url or (found.group(1) if (found := _METRICS.search(line)) else None)
                address = found.group(1) if (found := _GRPC.search(line)) else None
        assert url is not None, "the metrics URL is printed before the gRPC line"
        async with BankClient(address, timeout=20) as client:
            reply = await client.send_transactions(
                [
                    {
                        "id": 9_000_001,
                        "client_id": 1,
                        "date": AS_OF,
                        "amount": 10.0,
                        "currency": "BRL",
                        "description": "PADARIA",
                    }
                ],
                batch_id="t",
            )
        assert reply.success and reply.items_processed == 1, reply
        samples = await scrape(url)
        transactions = {"method": "IngestTransactions"}
        assert value(samples, "asyncpipe_grpc_requests_total", code="OK", **transactions) == 1
        assert value(samples, "asyncpipe_grpc_items_acknowledged_total", **transactions) == 1
        assert value(samples, "asyncpipe_pipeline_state", state="running") == 1
        # Live per-node figures: at least the batch just acknowledged is committed (the
        # start-up load from the input database may still be going in: serving does not
        # wait for it).
        committed = value(
            samples, "asyncpipe_node_messages_total", node="store_transactions", outcome="committed"
        )
        assert committed >= 1
        assert value(samples, "asyncpipe_node_messages_total", node="classify", outcome="received")
        assert value(samples, "asyncpipe_node_queue_capacity", node="classify") > 0
        assert value(samples, "asyncpipe_node_handler_seconds_count", node="classify") > 0
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.to_thread(proc.communicate, timeout=40)
        assert proc.returncode == 0, err
        # Piped: the final live table, with the server's line under its title.
        assert "gRPC: 1 requests" in out and "errors: none" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
