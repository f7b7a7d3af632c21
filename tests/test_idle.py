"""The continuous mode's idle watch (``_idle``): idle_timeout counts from when intake opens."""

from __future__ import annotations

import asyncio
from typing import Any

from pipelines import TIMEOUT, fed_by_submit

from asyncpipe import BaseHandler

SETUP_SECONDS = 0.6
IDLE_SECONDS = 0.3


class SlowSetup(BaseHandler):
    """Its setup() takes longer than the pipeline's idle_timeout (loading a model, say)."""

    async def setup(self) -> None:
        await asyncio.sleep(SETUP_SECONDS)

    async def handle(self, message: Any) -> Any:
        return message


async def test_idle_timeout_counts_from_when_intake_opens_not_from_setup() -> None:
    executor = fed_by_submit(SlowSetup(), idle_timeout=IDLE_SECONDS)
    run = asyncio.create_task(executor.run())
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(TIMEOUT):
        await executor.wait_started()
        opened = loop.time()
        assert executor.state == "running"
        await run
    open_for = loop.time() - opened

    assert open_for >= IDLE_SECONDS * 0.8, f"stopped {open_for:.2f}s after intake opened"
    assert executor.state == "closed"
