"""Running a pipeline: run(), async with, start(), stop(), abort(), cancellation, signals."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
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
    PipelineAborted,
    PipelineClosed,
    PipelineExecutor,
)
from asyncpipe.testing import CollectingSink

SCRIPT = Path(__file__).parent / "scripts" / "signal_pipeline.py"


class Held(BaseHandler):
    """A sink that holds every message until ``release`` is set; counts teardowns."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.teardowns = 0

    async def handle(self, message: Any) -> None:
        self.seen.append(message)
        self.arrived.set()
        await self.release.wait()

    async def teardown(self) -> None:
        self.teardowns += 1


class Yielding(CollectingSink):
    """A collecting sink that yields to the loop a few times per message, so messages are
    still in flight when the test acts."""

    async def __call__(self, message: Any) -> None:
        for _ in range(3):
            await asyncio.sleep(0)
        await super().__call__(message)


# -- run() -------------------------------------------------------------------------------


async def test_run_returns_when_sources_are_exhausted() -> None:
    sink = CollectingSink()
    executor = from_source([1, 2, 3], sink)

    async with asyncio.timeout(TIMEOUT):
        await executor.run()

    assert sink.items == [1, 2, 3]
    assert executor.state == "closed"


async def test_pipeline_without_sources_stops_by_itself_after_idle_timeout() -> None:
    sink = CollectingSink()
    executor = fed_by_submit(sink, idle_timeout=0.2)
    run = asyncio.create_task(executor.run())

    receipts = [await submit_once_open(executor, "ingest", i) for i in range(3)]
    async with asyncio.timeout(TIMEOUT):
        for receipt in receipts:
            await receipt
        await run  # nobody calls stop(): idleness does

    assert sink.items == [0, 1, 2]
    assert executor.state == "closed"


async def test_executor_runs_only_once() -> None:
    executor = from_source([1], CollectingSink())
    async with asyncio.timeout(TIMEOUT):
        await executor.run()

    with pytest.raises(RuntimeError, match="runs once"):
        await executor.run()
    with pytest.raises(RuntimeError, match="runs once"):
        async with executor:
            pass


async def test_start_inside_a_running_loop_says_to_await_run_and_leaves_it_runnable() -> None:
    sink = CollectingSink()
    executor = from_source([1, 2], sink)

    with pytest.raises(RuntimeError, match=r"use `await executor\.run\(\)`"):
        executor.start()

    assert executor.state == "created"
    async with asyncio.timeout(TIMEOUT):
        await executor.run()
    assert sink.items == [1, 2]


# -- async with --------------------------------------------------------------------------


async def test_async_with_drains_submitted_messages_on_normal_exit() -> None:
    sink = Yielding()
    async with asyncio.timeout(TIMEOUT):
        async with fed_by_submit(sink) as executor:
            receipts = [await executor.submit("ingest", i) for i in range(50)]
            assert len(sink.items) < 50  # still in flight when the block ends

    assert sink.items == list(range(50))
    assert all(receipt.done() and receipt.committed == 1 for receipt in receipts)
    assert executor.state == "closed"


async def test_async_with_aborts_and_reraises_when_the_body_raises() -> None:
    held = Held()
    with pytest.raises(ValueError, match="boom"):
        async with asyncio.timeout(TIMEOUT):
            async with fed_by_submit(held) as executor:
                receipts = [await executor.submit("ingest", i) for i in range(3)]
                await held.arrived.wait()
                raise ValueError("boom")

    for receipt in receipts:  # aborted, not drained: the sink is still holding message 0
        with pytest.raises(PipelineAborted):
            await receipt.wait(TIMEOUT)
    assert held.seen == [0]
    assert executor.state == "closed"


# -- stop() and abort() ------------------------------------------------------------------


async def test_stop_from_another_task_drains_what_was_submitted() -> None:
    sink = Yielding()
    executor = fed_by_submit(sink)
    run = asyncio.create_task(executor.run())
    receipts = [await submit_once_open(executor, "ingest", i) for i in range(20)]
    assert len(sink.items) < 20

    executor.stop()
    async with asyncio.timeout(TIMEOUT):
        await run

    assert sink.items == list(range(20))
    assert all(receipt.done() and receipt.committed == 1 for receipt in receipts)


async def test_submit_after_stop_is_refused() -> None:
    executor = fed_by_submit(CollectingSink())
    run = asyncio.create_task(executor.run())
    await submit_once_open(executor, "ingest", 0)

    executor.stop()
    with pytest.raises(PipelineClosed):
        await executor.submit("ingest", 1)
    async with asyncio.timeout(TIMEOUT):
        await run


async def test_abort_makes_run_raise_pipeline_aborted() -> None:
    held = Held()
    executor = fed_by_submit(held)
    run = asyncio.create_task(executor.run())
    await submit_once_open(executor, "ingest", 0)
    async with asyncio.timeout(TIMEOUT):
        await held.arrived.wait()

    executor.abort()
    with pytest.raises(PipelineAborted):
        async with asyncio.timeout(TIMEOUT):
            await run
    assert executor.state == "closed"


async def test_abort_fails_outstanding_receipts_with_pipeline_aborted() -> None:
    held = Held()
    executor = fed_by_submit(held)
    run = asyncio.create_task(executor.run())
    receipts = [await submit_once_open(executor, "ingest", i) for i in range(3)]
    async with asyncio.timeout(TIMEOUT):
        await held.arrived.wait()

    executor.abort()
    with pytest.raises(PipelineAborted):
        await run
    for receipt in receipts:
        with pytest.raises(PipelineAborted):
            await receipt.wait(TIMEOUT)


# -- cancellation ------------------------------------------------------------------------


async def cancel_while_handling(held: Held) -> PipelineExecutor:
    """Run source -> held sink in a task, cancel the task mid-message, return the executor."""
    executor = from_source([1, 2, 3], held)
    run = asyncio.create_task(executor.run())
    async with asyncio.timeout(TIMEOUT):
        await held.arrived.wait()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(TIMEOUT):
            await run
    assert run.cancelled()
    return executor


async def test_cancelling_run_propagates_cancelled_error_and_calls_teardown() -> None:
    held = Held()
    executor = await cancel_while_handling(held)

    assert held.teardowns == 1
    assert executor.state == "closed"


async def test_cancelling_run_leaves_no_asyncpipe_task_pending() -> None:
    await cancel_while_handling(Held())

    assert pending_asyncpipe_tasks() == []


async def test_aborted_async_with_leaves_no_asyncpipe_task_pending() -> None:
    held = Held()
    with pytest.raises(ValueError, match="boom"):
        async with asyncio.timeout(TIMEOUT):
            async with fed_by_submit(held) as executor:
                await executor.submit("ingest", 0)
                await held.arrived.wait()
                raise ValueError("boom")

    assert pending_asyncpipe_tasks() == []


# -- state after any run -----------------------------------------------------------------


def fail(message: Any) -> None:
    raise RuntimeError(f"cannot handle {message}")


async def end_exhausted(executor: PipelineExecutor, held: Held, run: asyncio.Task[None]) -> None:
    held.release.set()
    await run


async def end_stopped(executor: PipelineExecutor, held: Held, run: asyncio.Task[None]) -> None:
    executor.stop()
    held.release.set()
    await run


async def end_aborted(executor: PipelineExecutor, held: Held, run: asyncio.Task[None]) -> None:
    executor.abort()
    with pytest.raises(PipelineAborted):
        await run


async def end_cancelled(executor: PipelineExecutor, held: Held, run: asyncio.Task[None]) -> None:
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run


@pytest.mark.parametrize(
    "end", [end_exhausted, end_stopped, end_aborted, end_cancelled], ids=lambda f: f.__name__
)
async def test_executor_is_closed_after_the_run_ends(end: Callable[..., Any]) -> None:
    held = Held()
    executor = from_source([1, 2], held)
    run = asyncio.create_task(executor.run())
    async with asyncio.timeout(TIMEOUT):
        await held.arrived.wait()
        assert executor.state == "running"
        await end(executor, held, run)

    assert executor.state == "closed"


async def test_executor_is_closed_after_a_fail_fast_handler_fails() -> None:
    source = HandlerNode("source", [1, 2])
    node = HandlerNode("fail", fail, [source], on_error="fail")
    executor = PipelineExecutor([source], [node])

    with pytest.raises(HandlerError):
        async with asyncio.timeout(TIMEOUT):
            await executor.run()
    assert executor.state == "closed"


# -- start() -----------------------------------------------------------------------------


def test_start_runs_the_pipeline_synchronously_on_uvloop() -> None:
    loops: list[str] = []

    async def record(message: int) -> None:
        loops.append(type(asyncio.get_running_loop()).__module__)

    executor = from_source([1, 2, 3], record)
    executor.start()

    assert loops == ["uvloop"] * 3
    assert executor.state == "closed"


# -- signals (a real process) ------------------------------------------------------------


async def start_script(mode: str, *, new_group: bool = False) -> asyncio.subprocess.Process:
    """Start the signal pipeline script and wait for its ``ready`` line (``new_group``: in a
    process group of its own, as a terminal's foreground job is)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        mode,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        process_group=0 if new_group else None,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(TIMEOUT):
            line = await process.stdout.readline()
    except BaseException:
        process.kill()
        await process.wait()
        raise
    assert line == b"ready\n", line
    return process


async def finish(process: asyncio.subprocess.Process) -> tuple[int, str, str]:
    """Wait for the process to exit (killing it if it hangs); return (code, out, err)."""
    try:
        async with asyncio.timeout(TIMEOUT):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.communicate()
        pytest.fail("the pipeline process did not exit after the signal(s)")
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_sigint_drains_the_pipeline_and_exits_cleanly() -> None:
    process = await start_script("drain")

    process.send_signal(signal.SIGINT)
    code, out, err = await finish(process)

    assert code == 0, err
    lines = out.splitlines()
    assert "teardown" in lines
    [finished] = [line for line in lines if line.startswith("finished")]
    _, emitted, committed = finished.split()
    assert emitted.split("=")[1] == committed.split("=")[1]  # everything emitted committed


async def test_second_signal_aborts_a_pipeline_that_cannot_drain() -> None:
    process = await start_script("hang")

    process.send_signal(signal.SIGTERM)  # drain: cannot finish, the sink never returns
    process.send_signal(signal.SIGINT)  # abort
    code, out, err = await finish(process)

    assert code != 0
    assert "PipelineAborted" in err
    assert "teardown" in out.splitlines()
    assert not any(line.startswith("finished") for line in out.splitlines())


async def test_ctrl_c_with_a_cpu_node_drains_and_exits_0() -> None:
    # A terminal's Ctrl-C signals the whole process group: the workers too. They must
    # leave the decision to the parent, which drains.
    process = await start_script("cpu", new_group=True)

    os.killpg(process.pid, signal.SIGINT)
    code, out, err = await finish(process)

    assert code == 0, err
    assert "KeyboardInterrupt" not in err
    assert "Traceback" not in err
    lines = out.splitlines()
    assert "teardown" in lines
    [finished] = [line for line in lines if line.startswith("finished")]
    assert int(finished.split()[2].split("=")[1]) > 0  # the sink committed messages


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` now, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.add(child)
            stack.append(child)
    return found


async def exited(pid: int) -> None:
    """Return once process ``pid`` (not necessarily a child) has exited: its pidfd turns
    readable then."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    gone = loop.create_future()
    loop.add_reader(fd, gone.set_result, None)
    try:
        await gone
    finally:
        loop.remove_reader(fd)
        os.close(fd)


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs /proc and pidfds")
async def test_worker_processes_die_with_a_sigkilled_parent() -> None:
    process = await start_script("cpu")
    # The forkserver's workers are its children, not the pipeline's: take the whole tree.
    tree = descendants(process.pid)
    assert len(tree) >= 3, tree  # forkserver (+ resource tracker) and two workers
    exits = [asyncio.ensure_future(exited(pid)) for pid in tree]

    process.kill()
    await process.wait()

    done, pending = await asyncio.wait(exits, timeout=10)
    for waiter in pending:
        waiter.cancel()
    assert not pending, f"{len(pending)} of {len(tree)} descendants still running after 10 s"


# -- stop and abort at any moment ---------------------------------------------------------


async def test_abort_with_unordered_workers_raises_pipeline_aborted() -> None:
    # The abort lands at a different point of the run each time; whatever a node was doing
    # (e.g. sending into a channel being torn down), run() says it was aborted.
    async def step(x: int) -> int:
        await asyncio.sleep(0)
        return x

    for turns in range(1, 60, 3):
        source = HandlerNode("a", range(100_000))
        work = HandlerNode("b", step, [source], workers=3, ordered=False, capacity=2)
        out = HandlerNode("c", step, [work], capacity=2)
        executor = PipelineExecutor([source], [work, out])
        run = asyncio.create_task(executor.run())
        for _ in range(turns):
            await asyncio.sleep(0)

        executor.abort()

        with pytest.raises(PipelineAborted):
            await asyncio.wait_for(run, TIMEOUT)


async def test_stop_before_the_run_task_has_started_is_kept() -> None:
    sink = CollectingSink()
    executor = fed_by_submit(sink)
    run = asyncio.create_task(executor.run())

    executor.stop()  # the task has not started yet

    await asyncio.wait_for(run, TIMEOUT)
    assert executor.state == "closed"


async def test_abort_before_the_run_task_has_started_is_kept() -> None:
    executor = fed_by_submit(CollectingSink())
    run = asyncio.create_task(executor.run())

    executor.abort()

    with pytest.raises(PipelineAborted):
        await asyncio.wait_for(run, TIMEOUT)
    assert executor.state == "closed"


class SlowTeardown(BaseHandler):
    def __init__(self, log: list[str], name: str, release: asyncio.Event | None) -> None:
        self.log, self.name, self.release = log, name, release
        self.tearing_down = asyncio.Event()

    async def handle(self, message: Any) -> Any:
        return message

    async def teardown(self) -> None:
        self.tearing_down.set()
        if self.release is not None:
            await self.release.wait()
        self.log.append(self.name)


class ClosingSink:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def write(self, letter: Any) -> None:
        pass

    async def aclose(self) -> None:
        self.log.append("dead-letter sink closed")


async def test_a_second_cancel_during_cleanup_skips_no_teardown() -> None:
    log: list[str] = []
    release = asyncio.Event()
    first = SlowTeardown(log, "first", None)
    last = SlowTeardown(log, "last", release)  # set up last: torn down first
    ingest = HandlerNode("ingest", first)
    out = HandlerNode("out", last, [ingest])
    executor = PipelineExecutor([ingest], [out], dead_letter_sink=ClosingSink(log))
    run = asyncio.create_task(executor.run())
    await asyncio.wait_for(executor.wait_started(), TIMEOUT)

    run.cancel()
    await asyncio.wait_for(last.tearing_down.wait(), TIMEOUT)
    run.cancel()  # again, while the first teardown runs
    await let_cleanup_start()
    release.set()

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(run, TIMEOUT)
    assert log == ["last", "first", "dead-letter sink closed"]
    assert executor.state == "closed"


async def let_cleanup_start() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


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


async def test_abort_of_a_pipeline_without_handlers_raises_pipeline_aborted() -> None:
    executor = PipelineExecutor([HandlerNode("ingest")], [])
    run = asyncio.create_task(executor.run())
    async with asyncio.timeout(TIMEOUT):
        await executor.wait_started()
        executor.abort()
        with pytest.raises(PipelineAborted):
            await run
