"""The demo's ingestion server in its own process, started and stopped by the load test."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from pathlib import Path

from asyncpipe.demo.service import BankClient as IngestClient  # the bank's service

__all__ = ["DemoServer"]

_STARTUP_TIMEOUT = 120.0  # seconds: data generation and model training come first
_STOP_TIMEOUT = 60.0


class DemoServer:
    """``python -m asyncpipe.demo --serve`` on 127.0.0.1 with a fresh work directory."""

    def __init__(self, workdir: Path, extra: list[str] | None = None) -> None:
        self.workdir = workdir
        self.address = ""
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "server.log"
        self._log = open(self.log_path, "w")  # closed in stop()/kill()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "asyncpipe.demo",
                "--serve",
                "--quiet",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--workdir",
                str(workdir),
                # A small initial load, so that it does not compete with the sweep.
                "--clients",
                "1000",
                "--transactions",
                "1000",
                "--new",
                "100",
                *(extra or []),
            ],
            stdout=subprocess.PIPE,
            # Its log goes to a file: a pipe nobody reads during the sweep could fill up
            # and block the server.
            stderr=self._log,
            text=True,
        )

    @property
    def results(self) -> Path:
        return self.workdir / "out" / "results.db"

    async def ready(self) -> str:
        """Wait until it listens and its health check says SERVING; its address."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(_STARTUP_TIMEOUT):
            while not self.address:
                line = await asyncio.to_thread(self.proc.stdout.readline)
                if not line:
                    await asyncio.to_thread(self.proc.wait)
                    raise RuntimeError(
                        f"the demo server exited before serving:\n{self._log_tail()}"
                    )
                found = re.search(r"gRPC on (127\.0\.0\.1:\d+)", line)
                if found:
                    self.address = found.group(1)
            async with IngestClient(self.address) as client:
                status = await client.health()
        if status != "SERVING":
            raise RuntimeError(f"the demo server at {self.address} reports {status}")
        return self.address

    async def stop(self) -> tuple[int, str]:
        """SIGINT (drain, then exit); its exit code and the end of its log."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            await asyncio.to_thread(self.proc.communicate, timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.communicate)
        self._log.close()
        return self.proc.returncode, self._log_tail()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        self._log.close()

    def _log_tail(self, size: int = 3000) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-size:]
