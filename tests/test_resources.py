"""What a run acquires and releases (``_resources``): handlers' setup() failing or never
returning, and a teardown cut short by a second abort()."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import workers
from pipelines import TIMEOUT, fed_by_submit, pending_asyncpipe_tasks, submit_once_open

from asyncpipe import (
    BaseHandler,
    HandlerError,
    HandlerNode,
    HandlerSetupError,
    PipelineAborted,
    PipelineExecutor,
)
from asyncpipe.testing import CollectingSink


class StuckSetup(BaseHandler):
    """Its setup() never returns; it calls ``on_setup`` when entered."""

    def __init__(self, on_setup: Callable[[], None]) -> None:
        self.on_setup = on_setup
        self.setup_cancelled = False

    async def setup(self) -> None:
        self.on_setup()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.setup_cancelled = True
            raise

    async def handle(self, message: Any) -> Any:
        return message


async def test_cancelling_async_with_while_starting_leaves_nothing_running() -> None:
    loop = asyncio.get_running_loop()
    deadline = asyncio.timeout(TIMEOUT)
    entered: list[bool] = []

    def expire_now() -> None:  # the outer timeout fires while setup() is running
        entered.append(True)
        deadline.reschedule(loop.time())

    handler = StuckSetup(expire_now)
    executor = fed_by_submit(handler)
    with pytest.raises(TimeoutError):
        async with deadline:
            async with executor:
                pytest.fail("the pipeline started although setup() never returns")

    assert entered == [True]
    assert pending_asyncpipe_tasks() == []
    assert executor.state == "closed"
    assert handler.setup_cancelled


@pytest.mark.parametrize("cpu", [True, False], ids=["in-worker", "on-loop"])
async def test_setup_failure_raises_handler_setup_error_naming_the_node(cpu: bool) -> None:
    source = HandlerNode("source", range(6))
    model = HandlerNode("model", workers.FailingSetup(), [source], cpu=cpu)
    out = HandlerNode("sink", CollectingSink(), [model])
    executor = PipelineExecutor([source], [model, out], max_workers=2)

    with pytest.raises(HandlerSetupError) as raised:
        async with asyncio.timeout(TIMEOUT):
            await executor.run()

    assert isinstance(raised.value, HandlerError)
    assert raised.value.node == "model"
    assert "model.bin" in str(raised.value)
    assert executor.dead_letters == []  # not a per-message failure
    assert executor.state == "closed"


class SlowTeardown(BaseHandler):
    """Holds every message forever; its teardown() waits for an event nobody sets."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.tearing_down = asyncio.Event()
        self.torn_down = False

    async def handle(self, message: Any) -> None:
        self.arrived.set()
        await asyncio.Event().wait()

    async def teardown(self) -> None:
        self.tearing_down.set()
        await asyncio.Event().wait()
        self.torn_down = True


async def test_abort_during_cleanup_cuts_teardown_short_and_fails_receipts() -> None:
    sink = SlowTeardown()
    executor = fed_by_submit(sink)
    run = asyncio.create_task(executor.run())
    receipt = await submit_once_open(executor, "ingest", 1)

    async with asyncio.timeout(TIMEOUT):
        await sink.arrived.wait()
        executor.abort()
        await sink.tearing_down.wait()
        executor.abort()  # while cleanup is in progress: stop waiting for the teardown
        with pytest.raises(PipelineAborted):
            await run

    assert not sink.torn_down
    assert executor.state == "closed"
    assert receipt.done()
    with pytest.raises(PipelineAborted):
        await receipt.wait(TIMEOUT)
