"""Helpers shared by the tests: time bounds, small pipeline builders, and checks."""

from __future__ import annotations

import asyncio
from typing import Any

from asyncpipe import HandlerNode, PipelineExecutor, Receipt

TIMEOUT = 10  # seconds; a bound for awaits that would otherwise hang
#: The same bound for pipelines with worker processes, slow to spawn on a loaded machine.
WORKER_TIMEOUT = 30


def fed_by_submit(sink: Any, **options: Any) -> PipelineExecutor:
    """ingest (no handler, fed by submit()) -> sink."""
    ingest = HandlerNode("ingest")
    out = HandlerNode("sink", sink, [ingest])
    return PipelineExecutor([ingest], [out], **options)


def from_source(items: Any, sink: Any, **options: Any) -> PipelineExecutor:
    """source (emitting ``items``) -> sink."""
    source = HandlerNode("source", items)
    out = HandlerNode("sink", sink, [source])
    return PipelineExecutor([source], [out], **options)


async def submit_once_open(executor: PipelineExecutor, node: str, message: Any) -> Receipt:
    """submit() as soon as a run() started in another task accepts input."""
    async with asyncio.timeout(TIMEOUT):
        await executor.wait_started()
        return await executor.submit(node, message)


async def let_others_run(turns: int = 50) -> None:
    """Yield to the event loop enough times for every runnable task to go as far as it can."""
    for _ in range(turns):
        await asyncio.sleep(0)


def pending_asyncpipe_tasks() -> list[asyncio.Task[Any]]:
    """asyncpipe's tasks (named ``asyncpipe...``) not done yet."""
    return [
        task
        for task in asyncio.all_tasks()
        if task.get_name().startswith("asyncpipe") and not task.done()
    ]
