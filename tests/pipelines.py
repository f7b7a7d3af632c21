"""Small pipeline builders and checks shared by the lifecycle tests."""

from __future__ import annotations

import asyncio
from typing import Any

from asyncpipe import HandlerNode, PipelineExecutor, Receipt

TIMEOUT = 10  # seconds; a bound for awaits that would otherwise hang


def fed_by_submit(sink: Any, **options: Any) -> PipelineExecutor:
    """ingest (no handler, fed by submit()) -> sink."""
    ingest = HandlerNode("ingest")
    out = HandlerNode("sink", sink, [ingest])
    return PipelineExecutor([ingest], [out], **options)


def from_source(items: Any, sink: Any, **options: Any) -> PipelineExecutor:
    source = HandlerNode("source", items)
    out = HandlerNode("sink", sink, [source])
    return PipelineExecutor([source], [out], **options)


async def submit_once_open(executor: PipelineExecutor, node: str, message: Any) -> Receipt:
    """submit() as soon as a run() started in another task accepts input."""
    async with asyncio.timeout(TIMEOUT):
        await executor.wait_started()
        return await executor.submit(node, message)


def pending_asyncpipe_tasks() -> list[asyncio.Task[Any]]:
    return [
        task
        for task in asyncio.all_tasks()
        if task.get_name().startswith("asyncpipe") and not task.done()
    ]
