"""cpu=True nodes: handlers run in real worker processes (or a user's executor)."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import tempfile
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest
import workers
from pipelines import WORKER_TIMEOUT, submit_once_open

from asyncpipe import HandlerNode, HandlerSetupError, Outcome, PipelineAborted, PipelineExecutor
from asyncpipe.testing import CollectingSink, run_handler, run_pipeline


@contextlib.asynccontextmanager
async def rendezvous(path: Path, parties: int) -> AsyncIterator[set[int]]:
    """A unix socket server for :func:`workers.wait_for_all_workers`: answers ``go`` to
    every worker once ``parties`` distinct pids have checked in. Yields the pids seen."""
    pids: set[int] = set()
    writers: list[asyncio.StreamWriter] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pids.add(int(await reader.readline()))
        writers.append(writer)
        if len(pids) >= parties:
            for waiting in writers:
                if not waiting.is_closing():
                    waiting.write(b"go\n")
                    waiting.close()

    server = await asyncio.start_unix_server(on_connect, str(path))
    try:
        async with server:
            yield pids
    finally:
        for writer in writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def reaping_stray_workers() -> AsyncIterator[list[str]]:
    """Around a test that kills workers: afterwards, terminate any worker process still
    alive once the pipeline has closed, and report it in the yielded list.

    Every pool asyncpipe owns is shut down by then, so none should be left. A stray one
    would otherwise hang the test session at exit: concurrent.futures joins every pool's
    workers at interpreter exit, and a stray worker waits for work forever.
    """
    strays: list[str] = []
    try:
        yield strays
    finally:
        for process in multiprocessing.active_children():
            await asyncio.to_thread(process.join, 10)  # at once unless stuck (or the box is loaded)
            if process.is_alive():
                strays.append(f"{process.name} pid={process.pid}")
                process.terminate()
                await asyncio.to_thread(process.join, 5)


async def test_cpu_handler_runs_in_another_process() -> None:
    run = await run_handler(workers.worker_pid, [1, 2, 3], max_workers=1, cpu=True)

    assert len(run.outputs) == 3
    assert os.getpid() not in run.outputs
    assert run.dead_letters == []


async def test_plain_module_level_function_with_cpu_true_gives_its_results() -> None:
    run = await run_handler(workers.square, [1, 2, 3, 4], max_workers=1, cpu=True)

    assert run.outputs == [1, 4, 9, 16]


async def test_setup_runs_once_in_each_worker_process_and_every_worker_is_used(
    tmp_path: Path,
) -> None:
    async with rendezvous(tmp_path / "rv.sock", parties=2) as checked_in:
        run = await run_handler(
            workers.CountSetups(str(tmp_path / "rv.sock")),
            range(20),
            max_workers=2,
            cpu=True,
            timeout=WORKER_TIMEOUT,
        )

    assert run.dead_letters == []
    pids = {pid for pid, _ in run.outputs}
    assert len(run.outputs) == 20
    assert len(pids) == 2
    assert os.getpid() not in pids
    assert checked_in == pids  # setup() ran in exactly the workers that handled messages
    assert {setups for _, setups in run.outputs} == {1}


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (workers.AsyncDouble(), [2, 4, 6]),
        (workers.twice, [1, 101, 2, 102, 3, 103]),
        (workers.twice_async, [1, 101, 2, 102, 3, 103]),
    ],
    ids=["async-handle", "generator", "async-generator"],
)
async def test_offloaded_async_and_generator_handlers_emit_their_results(
    handler: object, expected: list[int]
) -> None:
    run = await run_handler(handler, [1, 2, 3], max_workers=1, cpu=True)

    assert run.dead_letters == []
    assert [value for value, _ in run.outputs] == expected
    assert os.getpid() not in {pid for _, pid in run.outputs}


async def test_parallel_chunks_in_workers_are_reassembled_in_order() -> None:
    run = await run_handler(
        workers.tag_chunk, [list(range(10))], max_workers=2, cpu=True, parallel=True, chunks=3
    )

    [message] = run.outputs
    assert [x for x, _, _ in message] == list(range(10))
    assert [size for _, size, _ in message] == [4] * 8 + [2] * 2  # chunks of 4, 4, 2
    assert os.getpid() not in {pid for _, _, pid in message}


async def test_reject_in_worker_dead_letters_the_item_with_its_index() -> None:
    sink = CollectingSink()
    ingest = HandlerNode("ingest")
    check = HandlerNode("check", workers.reject_odd, [ingest], cpu=True)
    out = HandlerNode("out", sink, [check])

    async with asyncio.timeout(WORKER_TIMEOUT):
        async with PipelineExecutor([ingest], [check, out], max_workers=1) as executor:
            receipt = await executor.submit("ingest", [10, 11, 12, 13])
            await receipt

    assert sink.items == [[10, 12]]
    letters = [(d.node, d.error_type, d.payload, d.index) for d in receipt.dead_letters]
    assert letters == [("check", "Rejected", 11, 1), ("check", "Rejected", 13, 3)]
    assert executor.dead_letters == receipt.dead_letters
    assert receipt.items[Outcome.DEAD_LETTERED] == 2
    assert receipt.items[Outcome.COMMITTED] == 2


async def test_reject_in_offloaded_chunk_reports_the_index_in_the_whole_message() -> None:
    run = await run_handler(
        workers.reject_odd, [list(range(10))], max_workers=2, cpu=True, parallel=True, chunks=3
    )

    assert run.outputs == [[0, 2, 4, 6, 8]]
    assert [(d.payload, d.index) for d in run.dead_letters] == [(i, i) for i in (1, 3, 5, 7, 9)]


async def test_exception_in_worker_becomes_dead_letter_with_remote_traceback() -> None:
    run = await run_handler(workers.fail_on_three, range(5), max_workers=1, cpu=True)

    assert run.outputs == [0, 1, 2, 4]
    [letter] = run.dead_letters
    assert (letter.node, letter.error_type, letter.payload) == ("handler", "ValueError", 3)
    assert "three is not welcome" in letter.error_message
    assert letter.traceback is not None
    assert "fail_on_three" in letter.traceback
    assert "workers.py" in letter.traceback


async def test_worker_killed_once_is_replaced_and_no_message_is_lost(tmp_path: Path) -> None:
    marker = tmp_path / "crashed"
    async with reaping_stray_workers():
        run = await run_handler(
            workers.CrashOnce(str(marker), poison=5),
            range(20),
            max_workers=2,
            cpu=True,
            timeout=WORKER_TIMEOUT,
        )

    assert marker.exists()  # the worker really died once
    assert run.outputs == list(range(20))
    assert run.metrics.worker_restarts >= 1
    assert run.dead_letters == []


async def test_message_that_always_kills_its_worker_is_dead_lettered_as_worker_crashed() -> None:
    async with reaping_stray_workers():
        run = await run_handler(
            workers.CrashAlways(poison=7),
            range(20),
            max_workers=2,
            cpu=True,
            timeout=WORKER_TIMEOUT,
        )

    assert run.outputs == [i for i in range(20) if i != 7]
    assert [(d.node, d.error_type, d.payload) for d in run.dead_letters] == [
        ("handler", "WorkerCrashed", 7)
    ]
    assert run.metrics.worker_restarts >= 1


async def test_worker_crashes_leave_no_worker_process_running_after_the_run() -> None:
    # A replaced pool must not leave a worker behind. The failure is a race (a worker
    # spawned into a pool while it breaks), so the poison message gets many retries: each
    # one replaces the pool once more.
    sink = CollectingSink()
    source = HandlerNode("source", range(40))
    node = HandlerNode("handler", workers.CrashAlways(poison=7), [source], cpu=True)
    out = HandlerNode("out", sink, [node])

    async with reaping_stray_workers() as strays:
        executor = await run_pipeline(
            [source], [node, out], max_workers=2, crash_retries=15, timeout=WORKER_TIMEOUT
        )

    assert executor.metrics().worker_restarts == 16
    assert [d.error_type for d in executor.dead_letters] == ["WorkerCrashed"]
    assert strays == [], "worker processes still running after run() returned"


async def test_user_process_pool_is_used_and_left_running() -> None:
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(
        1, mp_context=context, initializer=workers.name_pool, initargs=("user-pool",)
    ) as pool:
        sink = CollectingSink()
        source = HandlerNode("source", [1, 2, 3])
        node = HandlerNode("where", workers.where, [source], cpu=True)
        out = HandlerNode("out", sink, [node])

        await run_pipeline([source], [node, out], executor=pool, timeout=WORKER_TIMEOUT)

        assert [label for _, label, _ in sink.items] == ["user-pool"] * 3
        assert os.getpid() not in {pid for pid, _, _ in sink.items}
        async with asyncio.timeout(WORKER_TIMEOUT):  # not shut down by asyncpipe
            assert await asyncio.wrap_future(pool.submit(workers.square, 7)) == 49


async def test_user_thread_pool_given_to_a_node_is_used_and_left_running() -> None:
    with ThreadPoolExecutor(2, thread_name_prefix="user-threads") as pool:
        sink = CollectingSink()
        source = HandlerNode("source", [1, 2, 3])
        node = HandlerNode("where", workers.where, [source], executor=pool)
        out = HandlerNode("out", sink, [node])

        await run_pipeline([source], [node, out], timeout=WORKER_TIMEOUT)

        assert len(sink.items) == 3
        assert {pid for pid, _, _ in sink.items} == {os.getpid()}
        assert all(thread.startswith("user-threads") for _, _, thread in sink.items)
        async with asyncio.timeout(WORKER_TIMEOUT):  # not shut down by asyncpipe
            assert await asyncio.wrap_future(pool.submit(workers.square, 7)) == 49


async def test_teardown_runs_in_the_worker_when_the_pool_shuts_down(tmp_path: Path) -> None:
    run = await run_handler(
        workers.TeardownMarker(str(tmp_path)), range(6), max_workers=1, cpu=True
    )

    pids = set(run.outputs)
    assert len(pids) == 1
    assert set(os.listdir(tmp_path)) == {f"teardown-{pid}" for pid in pids}


async def test_a_started_pipeline_has_its_workers_set_up(tmp_path: Path) -> None:
    # "Started" means warm: every worker has loaded the handler and run its setup(), so
    # the first message is not kept waiting by a model being loaded.
    node = HandlerNode("count", workers.CountSetups(str(tmp_path / "rv.sock")), cpu=True)
    async with rendezvous(tmp_path / "rv.sock", parties=2) as checked_in:
        async with PipelineExecutor([node], max_workers=2) as executor:
            await executor.wait_started()
            assert len(checked_in) == 2
            receipt = await executor.submit("count", 1)
            await receipt.wait(WORKER_TIMEOUT)
        assert executor.metrics()["count"].committed == 1


async def test_a_setup_failing_in_the_workers_fails_the_start() -> None:
    node = HandlerNode("broken", workers.FailingSetup(), cpu=True)
    executor = PipelineExecutor([node], max_workers=1)
    with pytest.raises(HandlerSetupError, match="setup"):
        async with executor:
            pytest.fail("the pipeline started")


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


async def test_abort_with_a_long_running_cpu_job_ends_the_run_quickly() -> None:
    async with reaping_stray_workers() as strays, job_announcements() as (address, started):
        source = HandlerNode("source", range(2))
        cpu = HandlerNode("cpu", workers.Hang(address, limit=30), [source], cpu=True)
        out = HandlerNode("sink", CollectingSink(), [cpu])
        executor = PipelineExecutor([source], [cpu, out], max_workers=2)
        run = asyncio.create_task(executor.run())
        async with asyncio.timeout(WORKER_TIMEOUT):
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
    assert strays == []


async def test_abort_twice_with_a_cpu_job_running_fails_the_receipt_and_closes() -> None:
    async with reaping_stray_workers() as strays, job_announcements() as (address, started):
        ingest = HandlerNode("ingest")
        cpu = HandlerNode("cpu", workers.Hang(address, limit=30), [ingest], cpu=True)
        out = HandlerNode("sink", CollectingSink(), [cpu])
        executor = PipelineExecutor([ingest], [cpu, out], max_workers=1)
        run = asyncio.create_task(executor.run())
        receipt = await submit_once_open(executor, "ingest", 1)
        async with asyncio.timeout(WORKER_TIMEOUT):
            await started.get()

        executor.abort()
        executor.abort()  # e.g. a second Ctrl-C
        with pytest.raises(PipelineAborted):
            async with asyncio.timeout(20):
                await run

    assert executor.state == "closed"
    assert receipt.done()
    with pytest.raises(PipelineAborted):
        await receipt.wait(WORKER_TIMEOUT)
    assert strays == []
