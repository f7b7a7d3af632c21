"""A real PostgreSQL server for the tests (a pytest plugin, registered in conftest.py).

``pg_server`` (session): PostgreSQL 16 from the ``pgserver`` wheel (installed by
``pip install -e '.[test]'``), in a temporary directory, listening on a Unix socket only
(started in about a second; ``initdb`` included);
stopped and deleted after the session. ``pg_dsn``: a fresh database on it for one test,
dropped after. Nothing here skips: without pgserver the tests fail, loudly.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

with warnings.catch_warnings():
    # platformdirs warns at import that XDG_RUNTIME_DIR is unset (pgserver asks it
    # where to put its lock file); filterwarnings=error would make that an error.
    warnings.simplefilter("ignore")
    from pgserver import _commands, postgres_server


class PgServer:
    """The running server: DSNs of its databases, and a restart."""

    def __init__(self, server: Any) -> None:
        self._server = server

    def dsn(self, database: str = "postgres") -> str:
        uri: str = self._server.get_uri(database)
        return uri

    def restart(self) -> None:
        """Stop the server (fast shutdown: every connection is cut) and start it again,
        on the same socket."""
        pgdata = self._server.pgdata
        pg_ctl = str(_commands.POSTGRES_BIN_PATH / "pg_ctl")
        # The server's output goes to its log, never to a pipe of ours (it would hold it).
        command = [pg_ctl, "-D", str(pgdata), "-l", str(pgdata / "log"), "-w", "-m", "fast"]
        subprocess.run(
            [*command, "restart"],
            user=self._server.system_user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
            timeout=60,
        )


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server for the session."""
    # Not under pytest's basetemp: the server runs as another user (when the tests run as
    # root), which must traverse the directory, and pytest sessions running at the same
    # time set /tmp/pytest-of-<user> back to mode 0700.
    parent = Path(tempfile.mkdtemp(prefix="asyncpipe-postgres-"))
    try:
        server = postgres_server.get_server(parent / "pgdata", cleanup_mode="delete")
        try:
            yield PgServer(server)
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
async def pg_dsn(pg_server: PgServer) -> AsyncIterator[str]:
    """A fresh, empty database for one test (dropped after it)."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server.dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield pg_server.dsn(name)
    admin = await asyncpg.connect(pg_server.dsn())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
