"""Regression tests for defects found in review of the core runtime.

Each test pins the corrected behaviour: handlers raising CancelledError, rejections of a
failed attempt, receipt item counts, abort() and cleanup, run()'s caller task, idle time,
stopping sources, cancelled starts, setup() failures in workers, source factories,
parallel nodes, functools.partial generators, and cancellation of ``async with``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import multiprocessing
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import workers
from pipelines import (
    TIMEOUT,
    fed_by_submit,
    from_source,
    pending_asyncpipe_tasks,
    submit_once_open,
)

from asyncpipe import (
    BaseHandler,
    HandlerError,
    HandlerNode,
    HandlerSetupError,
    Outcome,
    PipelineAborted,
    PipelineExecutor,
    reject,
)
from asyncpipe.testing import CollectingSink, run_handler, run_pipeline

# -- helpers -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def job_announcements() -> AsyncIterator[tuple[str, asyncio.Queue[int]]]:
    """A unix socket server for :class:`workers.Hang`: yields its address and a queue that
    receives the pid of each worker process as it starts a job."""
    started: asyncio.Queue[int] = asyncio.Queue()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            started.put_nowait(int(await reader.readline()))
        finally:
            writer.close()

    # A short directory: a unix socket path must fit in ~100 bytes.
    with tempfile.TemporaryDirectory(prefix="ap-") as directory:
        address = os.path.join(directory, "jobs.sock")
        server = await asyncio.start_unix_server(on_connect, address)
        async with server:
            yield address, started


async def stray_worker_processes() -> list[str]:
    """Worker processes still alive (they should all be gone once a run has ended);
    kills any, so that a failing test does not hang the session at exit."""
    strays = []
    for process in multiprocessing.active_children():
        await asyncio.to_thread(process.join, 2)  # returns at once unless it is stuck
        if process.is_alive():
            strays.append(f"{process.name} pid={process.pid}")
            process.kill()
            await asyncio.to_thread(process.join, 5)
    return strays


# -- a handler raising CancelledError ------------------------------------------------------


async def cancelled_on_three(message: int) -> int:
    """Awaits a future someone else cancelled: a CancelledError the pipeline did not cause."""
    if message == 3:
        future = asyncio.get_running_loop().create_future()
        future.cancel()
        await future
    return message


@pytest.mark.parametrize(
    "options",
    [{}, {"workers": 2}, {"retries": 1, "backoff": 0}],
    ids=["serial", "concurrent", "with-retry"],
)
async def test_handler_raising_cancelled_error_is_dead_lettered_and_run_finishes(
    options: dict[str, Any],
) -> None:
    sink = CollectingSink()
    source = HandlerNode("source", range(10))
    node = HandlerNode("mid", cancelled_on_three, [source], capacity=2, **options)
    out = HandlerNode("sink", sink, [node])

    executor = await run_pipeline([source], [node, out], timeout=TIMEOUT)

    assert sink.items == [i for i in range(10) if i != 3]
    [letter] = executor.dead_letters
    assert (letter.node, letter.error_type, letter.payload) == ("mid", "RuntimeError", 3)
    assert "CancelledError" in (letter.traceback or "")
    assert executor.state == "closed"


# -- rejections of a failed attempt --------------------------------------------------------


def reject_then_fail(batch: Any) -> Any:
    if batch == "bad":
        reject("bad-item", "invalid", index=0)
        raise ValueError("boom")
    return batch


async def test_rejections_of_a_failed_message_are_not_charged_to_the_next_message() -> None:
    ingest = HandlerNode("ingest")
    check = HandlerNode("check", reject_then_fail, [ingest], retries=1, backoff=0)
    sink = HandlerNode("sink", lambda message: None, [check])

    async with asyncio.timeout(TIMEOUT):
        async with PipelineExecutor([ingest], [check, sink]) as executor:
            bad = await (await executor.submit("ingest", "bad"))
            good = await (await executor.submit("ingest", ["good"]))

    assert [(d.error_type, d.payload) for d in bad.dead_letters] == [("ValueError", "bad")]
    assert good.dead_letters == []
    assert good.counts[Outcome.DEAD_LETTERED] == 0
    assert good.committed == 1
    assert good.items[Outcome.COMMITTED] == 1
    assert [d.error_type for d in executor.dead_letters] == ["ValueError"]


# -- receipt item counts -------------------------------------------------------------------


def reject_negative_rows(batch: list[tuple[Any, ...]]) -> None:
    """A sink for rows (tuples, as csv or sqlite give them): rejects negative amounts."""
    for i, row in enumerate(batch):
        if row[1] < 0:
            reject(row, "negative", index=i)


def reject_negative_rows_then_filter(batch: list[tuple[Any, ...]]) -> None:
    reject_negative_rows(batch)
    return None  # nothing left worth emitting


async def test_a_rejected_tuple_row_counts_as_one_item() -> None:
    executor = fed_by_submit(reject_negative_rows)
    batch = [("a", 1, "x"), ("b", -1, "y"), ("c", 2, "z")]

    async with asyncio.timeout(TIMEOUT):
        async with executor:
            receipt = await (await executor.submit("ingest", batch))

    assert receipt.items[Outcome.DEAD_LETTERED] == 1
    assert receipt.items[Outcome.COMMITTED] == 2
    assert [d.payload for d in receipt.dead_letters] == [("b", -1, "y")]


async def test_node_that_rejects_some_items_and_filters_counts_the_rest_as_filtered() -> None:
    ingest = HandlerNode("ingest")
    mid = HandlerNode("mid", reject_negative_rows_then_filter, [ingest])
    sink = CollectingSink()
    out = HandlerNode("sink", sink, [mid])
    batch = [("a", 1), ("b", -1), ("c", 2)]  # 3 items, 1 rejected

    async with asyncio.timeout(TIMEOUT):
        async with PipelineExecutor([ingest], [mid, out]) as executor:
            receipt = await (await executor.submit("ingest", batch))

    assert receipt.items[Outcome.DEAD_LETTERED] == 1
    assert receipt.items[Outcome.FILTERED] == 2
    assert receipt.items[Outcome.COMMITTED] == 0
    assert receipt.counts[Outcome.FILTERED] == 1
    assert sink.items == []
    assert executor.metrics()["mid"].filtered == 1


# -- abort() with a job running in a worker process ----------------------------------------


async def test_abort_with_a_long_running_cpu_job_ends_the_run_quickly() -> None:
    async with job_announcements() as (address, started):
        source = HandlerNode("source", range(2))
        cpu = HandlerNode("cpu", workers.Hang(address, limit=30), [source], cpu=True)
        out = HandlerNode("sink", CollectingSink(), [cpu])
        executor = PipelineExecutor([source], [cpu, out], max_workers=2)
        run = asyncio.create_task(executor.run())
        async with asyncio.timeout(TIMEOUT):
            pids = {await started.get(), await started.get()}  # both jobs are running

        loop = asyncio.get_running_loop()
        began = loop.time()
        executor.abort()
        abort_took = loop.time() - began
        with pytest.raises(PipelineAborted):
            async with asyncio.timeout(20):
                await run
        run_took = loop.time() - began

    assert abort_took < 1
    assert run_took < 5, f"run() took {run_took:.1f}s to end after abort()"
    assert executor.state == "closed"
    assert os.getpid() not in pids
    assert await stray_worker_processes() == []


async def test_abort_twice_with_a_cpu_job_running_fails_the_receipt_and_closes() -> None:
    async with job_announcements() as (address, started):
        ingest = HandlerNode("ingest")
        cpu = HandlerNode("cpu", workers.Hang(address, limit=30), [ingest], cpu=True)
        out = HandlerNode("sink", CollectingSink(), [cpu])
        executor = PipelineExecutor([ingest], [cpu, out], max_workers=1)
        run = asyncio.create_task(executor.run())
        receipt = await submit_once_open(executor, "ingest", 1)
        async with asyncio.timeout(TIMEOUT):
            await started.get()

        executor.abort()
        executor.abort()  # e.g. a second Ctrl-C
        with pytest.raises(PipelineAborted):
            async with asyncio.timeout(20):
                await run

    assert executor.state == "closed"
    assert receipt.done()
    with pytest.raises(PipelineAborted):
        await receipt.wait(TIMEOUT)
    assert await stray_worker_processes() == []


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


# -- run()'s caller task after the pipeline closed -----------------------------------------


async def test_abort_after_run_returned_does_not_cancel_the_callers_task() -> None:
    executor = from_source([1, 2, 3], CollectingSink())

    async def caller() -> str:
        await executor.run()
        executor.abort()  # e.g. an application's shutdown hook
        await asyncio.sleep(0)  # the caller's own work goes on
        return "finished"

    task = asyncio.create_task(caller())
    async with asyncio.timeout(TIMEOUT):
        await asyncio.wait([task])

    assert not task.cancelled(), "abort() of a closed pipeline cancelled run()'s caller"
    assert task.result() == "finished"
    assert executor.state == "closed"


async def test_aclose_on_a_closed_pipeline_returns_at_once() -> None:
    executor = from_source([1, 2, 3], CollectingSink())
    async with asyncio.timeout(TIMEOUT):
        await executor.run()

    async with asyncio.timeout(2):
        await executor.aclose()  # from run()'s caller
        await asyncio.create_task(executor.aclose())  # from another task
    assert executor.state == "closed"


# -- idle_timeout and setup() --------------------------------------------------------------

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


# -- stop() while a source waits on a full channel -----------------------------------------


async def test_stop_while_source_is_blocked_delivers_its_item_to_every_dependent() -> None:
    yielded: list[int] = []
    pulled_third = asyncio.Event()
    gate = asyncio.Event()
    b_holding = asyncio.Event()
    a_out: list[int] = []
    b_out: list[int] = []

    async def files() -> AsyncIterator[int]:  # once yielded, an item counts as consumed
        for i in range(1000):
            yielded.append(i)
            if i == 2:
                pulled_third.set()
            yield i

    async def slow_b(message: int) -> None:
        b_holding.set()
        await gate.wait()
        b_out.append(message)

    source = HandlerNode("source", files)
    a = HandlerNode("a", a_out.append, [source], capacity=100)
    b = HandlerNode("b", slow_b, [source], capacity=1)
    executor = PipelineExecutor([source], [a, b])
    run = asyncio.create_task(executor.run())
    async with asyncio.timeout(TIMEOUT):
        # b holds item 0 and its channel holds item 1: the source is stuck putting item 2.
        await b_holding.wait()
        await pulled_third.wait()
        executor.stop()
        for _ in range(20):  # loop turns enough for the executor to act on stop()
            await asyncio.sleep(0)
        gate.set()
        await run

    assert yielded == [0, 1, 2]
    assert a_out == yielded
    assert b_out == yielded


# -- cancelling `async with` while the pipeline starts -------------------------------------


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


# -- setup() failing -----------------------------------------------------------------------


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


# -- sources that fail ---------------------------------------------------------------------


def rows_from_db() -> Any:
    """A source given as a function of no arguments; the database is down."""
    raise ConnectionError("db unreachable")


def not_iterable() -> Any:
    return 42


@pytest.mark.parametrize(
    ("factory", "error_type"),
    [(rows_from_db, "ConnectionError"), (not_iterable, "TypeError")],
    ids=["raises", "returns-non-iterable"],
)
async def test_failing_source_function_becomes_a_dead_letter_of_its_node(
    factory: Callable[[], Any], error_type: str
) -> None:
    sink = CollectingSink()
    source = HandlerNode("clients", factory)
    out = HandlerNode("sink", sink, [source])

    executor = await run_pipeline([source], [out], timeout=TIMEOUT)

    assert [(d.node, d.error_type) for d in executor.dead_letters] == [("clients", error_type)]
    assert sink.items == []
    assert executor.state == "closed"


async def lines_then_truncated() -> AsyncIterator[str]:
    yield "ok-1"
    reject("garbage line", "malformed")
    raise OSError("file truncated")
    yield "never"  # pragma: no cover


async def test_source_that_rejects_then_raises_dead_letters_both() -> None:
    sink = CollectingSink()
    source = HandlerNode("lines", lines_then_truncated)
    out = HandlerNode("sink", sink, [source])

    executor = await run_pipeline([source], [out], timeout=TIMEOUT)

    assert sink.items == ["ok-1"]
    assert [(d.node, d.error_type, d.payload) for d in executor.dead_letters] == [
        ("lines", "Rejected", "garbage line"),
        ("lines", "OSError", None),
    ]


# -- parallel=True -------------------------------------------------------------------------


async def parse_prices(chunk: list[int]) -> list[int]:
    try:
        {}["price"]
    except KeyError as exc:
        raise ValueError("record without price") from exc
    return chunk  # pragma: no cover


@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "whole"])
async def test_dead_letter_traceback_keeps_the_handlers_own_cause(parallel: bool) -> None:
    run = await run_handler(
        parse_prices, [[1, 2, 3, 4]], parallel=parallel, chunks=2, timeout=TIMEOUT
    )

    # Every item fails on its own (poison isolation): each letter keeps the cause.
    assert sorted(letter.index for letter in run.dead_letters) == [0, 1, 2, 3]
    for letter in run.dead_letters:
        assert letter.error_type == "ValueError"
        assert letter.traceback is not None
        assert "KeyError" in letter.traceback
        assert "direct cause" in letter.traceback


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


def chunk_generator(chunk: list[int]) -> Any:
    yield chunk


async def chunk_async_generator(chunk: list[int]) -> Any:
    yield chunk


@pytest.mark.parametrize(
    "handler", [chunk_generator, chunk_async_generator], ids=["generator", "async-generator"]
)
async def test_parallel_with_a_generator_handler_is_refused_at_construction(
    handler: Any,
) -> None:
    source = HandlerNode("source", [[1, 2, 3, 4]])
    with pytest.raises(ValueError, match="parallel=True"):
        HandlerNode("handler", handler, [source], parallel=True, chunks=2)


# -- functools.partial of generator functions ----------------------------------------------


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


# -- cancelling `async with` after the pipeline failed -------------------------------------


def fail(message: Any) -> None:
    raise ValueError("bad")


async def test_timeout_around_async_with_still_fires_after_a_fail_fast_failure() -> None:
    ingest = HandlerNode("ingest")
    sink = HandlerNode("sink", fail, [ingest], on_error="fail")
    executor = PipelineExecutor([ingest], [sink])
    loop = asyncio.get_running_loop()
    reached: list[bool] = []

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(TIMEOUT) as deadline:
            async with executor:
                receipt = await executor.submit("ingest", 1)
                with pytest.raises(PipelineAborted):
                    await receipt  # the pipeline has failed fail-fast
                reached.append(True)
                deadline.reschedule(loop.time())  # the timeout fires now...
                await asyncio.Event().wait()  # ...during the application's own work

    assert reached == [True]
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    assert executor.state == "closed"


# -- Python 3.11 TaskGroup cancellation leaks ---------------------------------------------


async def test_abort_of_a_pipeline_without_handlers_raises_pipeline_aborted() -> None:
    executor = PipelineExecutor([HandlerNode("ingest")], [])
    run = asyncio.create_task(executor.run())
    async with asyncio.timeout(TIMEOUT):
        await executor.wait_started()
        executor.abort()
        with pytest.raises(PipelineAborted):
            await run


async def test_a_failed_chunk_leaves_no_cancellation_behind_on_the_node() -> None:
    # After a chunk fails, a handler that raises CancelledError must still be dead-lettered
    # as its own failure, not taken for the node being cancelled (which would lose it).
    async def chunk_handler(chunk: list[str]) -> list[str]:
        await asyncio.sleep(0)
        if "boom" in chunk:
            raise ValueError("boom")
        if "cancel" in chunk:
            raise asyncio.CancelledError
        return chunk

    run = await run_handler(
        chunk_handler, [["boom", "x"], ["cancel", "x"], ["a", "b"]], parallel=True, chunks=2
    )

    # Poison isolation lets each message's good item through.
    assert run.outputs == [["x"], ["x"], ["a", "b"]]
    assert [(d.error_type, d.payload) for d in run.dead_letters] == [
        ("ValueError", "boom"),
        ("RuntimeError", "cancel"),
    ]
