"""Calling a handler (``_invoke``): parallel chunks that all filter, partials of generator
functions."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import pytest
import workers
from pipelines import TIMEOUT

from asyncpipe.testing import run_handler


def drop_chunk(chunk: list[int]) -> None:
    return None


@pytest.mark.parametrize("cpu", [False, True], ids=["on-loop", "in-worker"])
async def test_parallel_handler_returning_none_for_every_chunk_filters_the_message(
    cpu: bool,
) -> None:
    handler = workers.drop_chunk if cpu else drop_chunk
    run = await run_handler(
        handler,
        [[1, 2, 3, 4]],
        parallel=True,
        chunks=2,
        cpu=cpu,
        max_workers=1,
        timeout=TIMEOUT,
    )

    assert run.outputs == []
    assert run.dead_letters == []
    assert run.metrics["handler"].filtered == 1
    assert run.metrics["handler"].emitted == 0
    assert run.metrics["sink"].received == 0


def repeat(times: int, message: Any) -> Any:
    for _ in range(times):
        yield message


async def repeat_async(times: int, message: Any) -> Any:
    for _ in range(times):
        await asyncio.sleep(0)
        yield message


@pytest.mark.parametrize("function", [repeat, repeat_async], ids=["generator", "async-generator"])
async def test_partial_of_a_generator_function_emits_its_items(function: Any) -> None:
    run = await run_handler(functools.partial(function, 2), [1, 2], timeout=TIMEOUT)

    assert run.outputs == [1, 1, 2, 2]
    assert run.dead_letters == []
