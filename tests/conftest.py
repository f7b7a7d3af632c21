"""Fixtures for the whole suite.

Every test's event loop runs in asyncio debug mode (un-awaited coroutines, non-threadsafe
calls and unclosed resources are reported; ``filterwarnings = error`` makes the warnings
fail the test). Shared helpers -- ``TIMEOUT``, pipeline builders, ``submit_once_open``,
``let_others_run`` -- are in ``pipelines.py``: a conftest is not meant to be imported.
A real PostgreSQL server (``pg_server``, ``pg_dsn``) comes from the ``postgres`` plugin
(``postgres.py``); the state tests' ``persistent_store`` from ``state_stores.py``.

This directory is on ``sys.path`` (pytest's default "prepend" import mode puts the
directory of a rootless conftest there), so tests in sub-folders import ``pipelines`` and
``workers`` as top-level modules too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

#: Debug mode logs a callback holding the loop longer than this. The default (0.1 s) is
#: crossed by process-pool start-up and SQLite commits on a loaded machine: noise, not a
#: finding; a callback this slow is worth its warning.
SLOW_CALLBACK_SECONDS = 1.0

pytest_plugins = ["postgres", "state_stores"]


@pytest.fixture(autouse=True)
async def asyncio_debug_mode() -> AsyncIterator[None]:
    """Run the test's event loop in debug mode."""
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = SLOW_CALLBACK_SECONDS
    yield
