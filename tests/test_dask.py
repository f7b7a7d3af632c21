"""Nodes whose handlers run on a real Dask cluster: set up once per worker, results in
order, a worker killed mid-run, a poisonous message, a scheduler that goes away, and the
ways to name the cluster.

The cluster is a ``LocalCluster`` of two worker processes (one thread each) on 127.0.0.1,
started once for this module (it takes seconds) and closed after it: its nannies are
multiprocessing children, which other modules must not find (they reap stray workers).
Its scheduler gives up on a task at the first death of its worker
(``allowed_failures=0``), so a poisonous message costs two worker restarts, not eight,
and asyncpipe's own retry of a ``KilledWorker`` is what reruns the messages of a killed
worker; and it gives each worker one task at a time (``worker-saturation`` 1.0). The
handlers are in ``tests/workers.py``: the workers import them by reference (they are
spawned with the session's ``sys.path``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import dask
import pytest
import workers
from distributed import Client, LocalCluster, Scheduler, SchedulerPlugin
from pipelines import WORKER_TIMEOUT

from asyncpipe import HandlerError, HandlerNode, HandlerSetupError, PipelineExecutor
from asyncpipe.dask import DaskExecutor, SchedulerUnavailable
from asyncpipe.testing import CollectingSink, run_handler

#: Seconds to wait for the cluster's two workers (one may be restarting after a test
#: killed it), and the bound of a run whose workers die: a restart (spawn, imports,
#: registration) took up to ~30 s on a loaded 2-core machine.
WORKERS_TIMEOUT = 120


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[LocalCluster]:
    # One task at a time per (one-thread) worker: the poisonous message never shares a
    # worker with an innocent one, which a death would make a suspect too.
    with (
        dask.config.set({"distributed.scheduler.worker-saturation": 1.0}),
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
            scheduler_kwargs={"allowed_failures": 0},
        ) as cluster,
    ):
        yield cluster


@pytest.fixture(scope="module")
def session_client(dask_cluster: LocalCluster) -> Iterator[Client]:
    with Client(dask_cluster, set_as_default=False) as client:
        yield client


@pytest.fixture
def dask_client(session_client: Client) -> Client:
    """A synchronous client of the session's cluster, once both its workers are up (for
    the tests' own look at the workers; the pipelines connect their own)."""
    session_client.wait_for_workers(2, timeout=WORKERS_TIMEOUT)
    return session_client


def worker_pids(client: Client) -> set[int]:
    pids: dict[str, int] = client.run(os.getpid)
    return set(pids.values())


async def test_setup_runs_once_per_worker_and_teardown_when_the_node_ends(
    dask_cluster: LocalCluster, dask_client: Client
) -> None:
    token = uuid.uuid4().hex
    run = await run_handler(
        workers.SetUpOncePerWorker(token),
        range(40),
        executor=DaskExecutor(dask_cluster.scheduler_address),
        timeout=WORKER_TIMEOUT,
    )

    assert run.dead_letters == []
    assert [square for square, _, _ in run.outputs] == [x * x for x in range(40)]  # in order
    assert {pid for _, pid, _ in run.outputs} <= worker_pids(dask_client)
    assert {setups for _, _, setups in run.outputs} == {1}
    # Every worker set the handler up once (as the run started) and tore it down once.
    lifecycles = dask_client.run(workers.lifecycle_of, token)
    assert list(lifecycles.values()) == [["setup", "teardown"]] * 2
    # Several calls in flight per worker by default: twice the cluster's threads.
    assert run.metrics.nodes["handler"].workers == 4


async def test_reject_and_poison_isolation_work_from_dask_workers(
    dask_cluster: LocalCluster, dask_client: Client
) -> None:
    executor = DaskExecutor(dask_cluster.scheduler_address)
    rejected = await run_handler(workers.reject_odd, [[10, 11, 12, 13]], executor=executor)
    isolated = await run_handler(workers.to_float32, [[1.0, 1e39, 2.0]], executor=executor)

    assert rejected.outputs == [[10, 12]]
    letters = [(d.error_type, d.payload, d.index) for d in rejected.dead_letters]
    assert letters == [("Rejected", 11, 1), ("Rejected", 13, 3)]
    assert isolated.outputs == [[2.0, 4.0]]
    [letter] = isolated.dead_letters
    assert (letter.error_type, letter.payload, letter.index) == ("OverflowError", 1e39, 1)


async def test_an_exception_on_a_worker_is_dead_lettered_with_its_remote_traceback(
    dask_cluster: LocalCluster, dask_client: Client
) -> None:
    executor = DaskExecutor(dask_cluster.scheduler_address)
    run = await run_handler(workers.fail_on_three, range(5), executor=executor)

    assert run.outputs == [0, 1, 2, 4]
    [letter] = run.dead_letters
    assert (letter.error_type, letter.payload) == ("ValueError", 3)
    assert letter.traceback is not None and "fail_on_three" in letter.traceback


@contextlib.asynccontextmanager
async def killing_the_worker_of_call(path: Path, number: int) -> AsyncIterator[list[int]]:
    """The unix socket server :class:`workers.AskFirst` calls ask: the process making call
    ``number`` (counting from 1) is SIGKILLed while that call waits; every other call is
    told to go on at once. Yields the killed pid (once killed)."""
    calls = 0
    killed: list[int] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        this_call = calls
        pid = int(await reader.readline())
        if this_call == number:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        else:
            writer.write(b"go\n")
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    server = await asyncio.start_unix_server(on_connect, str(path))
    async with server:
        yield killed


@pytest.mark.timeout(2 * WORKERS_TIMEOUT)  # worker restarts, on a loaded machine
async def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(
    dask_cluster: LocalCluster, dask_client: Client, tmp_path: Path
) -> None:
    address = str(tmp_path / "gate.sock")
    async with killing_the_worker_of_call(tmp_path / "gate.sock", number=5) as killed:
        run = await run_handler(
            workers.AskFirst(address),
            range(20),
            executor=DaskExecutor(dask_cluster.scheduler_address),
            timeout=WORKERS_TIMEOUT,
        )

    assert len(killed) == 1  # the test really killed a worker while it ran a message
    assert [message for message, _ in run.outputs] == list(range(20))  # each once, in order
    assert run.dead_letters == []
    assert run.metrics.worker_restarts >= 1
    dask_client.wait_for_workers(2, timeout=WORKERS_TIMEOUT)
    assert killed[0] not in worker_pids(dask_client)  # it died; its nanny started another


@pytest.mark.timeout(2 * WORKERS_TIMEOUT)  # worker restarts, on a loaded machine
async def test_a_message_that_kills_every_worker_is_dead_lettered_as_worker_crashed(
    dask_cluster: LocalCluster, dask_client: Client
) -> None:
    run = await run_handler(
        workers.CrashAlways(poison=3),
        range(8),
        executor=DaskExecutor(dask_cluster.scheduler_address),
        timeout=WORKERS_TIMEOUT,
    )

    assert run.outputs == [0, 1, 2, 4, 5, 6, 7]
    [letter] = run.dead_letters
    assert (letter.error_type, letter.payload) == ("WorkerCrashed", 3)
    assert "Dask workers died running workers.CrashAlways (2 time(s))" in letter.error_message


class TaskArrived(SchedulerPlugin):
    """Sets ``event`` when a client sends the scheduler a task (an in-process scheduler on
    the test's loop)."""

    def __init__(self, event: asyncio.Event) -> None:
        self.event = event

    def update_graph(self, scheduler: Scheduler, **kwargs: Any) -> None:
        self.event.set()


async def scheduler_without_workers() -> tuple[Scheduler, asyncio.Event]:
    scheduler = await Scheduler(host="127.0.0.1", port=0, dashboard_address="127.0.0.1:0")
    arrived = asyncio.Event()
    scheduler.add_plugin(TaskArrived(arrived))
    return scheduler, arrived


async def test_the_scheduler_gone_dead_letters_the_messages_naming_its_address() -> None:
    scheduler, arrived = await scheduler_without_workers()
    address = scheduler.address
    ingest = HandlerNode("ingest")
    work = HandlerNode("work", workers.square, [ingest], executor=DaskExecutor(address))
    out = HandlerNode("out", CollectingSink(), [work])
    async with asyncio.timeout(WORKER_TIMEOUT):
        async with PipelineExecutor([ingest], [work, out]) as executor:
            in_flight = await executor.submit("ingest", 3)
            await arrived.wait()  # the task waits at the scheduler (there is no worker)
            await scheduler.close()
            await in_flight
            after = await executor.submit("ingest", 4)
            await after

    assert (in_flight.dead_lettered, after.dead_lettered) == (1, 1)
    assert [letter.payload for letter in executor.dead_letters] == [3, 4]
    for letter in executor.dead_letters:
        assert letter.error_type == "SchedulerUnavailable"
        assert f"the Dask scheduler at {address} is unreachable" in letter.error_message


async def test_the_scheduler_gone_fails_a_fail_fast_node_naming_its_address() -> None:
    scheduler, arrived = await scheduler_without_workers()
    address = scheduler.address
    ingest = HandlerNode("ingest")
    work = HandlerNode(
        "work", workers.square, [ingest], executor=DaskExecutor(address), on_error="fail"
    )
    executor = PipelineExecutor([ingest], [work])

    async def lose_the_scheduler_with_a_task_in_flight() -> None:
        await executor.wait_started()
        await executor.submit("ingest", 3)
        await arrived.wait()
        await scheduler.close()

    with pytest.raises(HandlerError, match=f"Dask scheduler at {address} is unreachable"):
        async with asyncio.timeout(WORKER_TIMEOUT):
            await asyncio.gather(executor.run(), lose_the_scheduler_with_a_task_in_flight())


async def test_a_scheduler_that_cannot_be_reached_fails_the_start_naming_it() -> None:
    with socket.socket() as bound:  # a port nobody listens on: connections are refused
        bound.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{bound.getsockname()[1]}"
        executor = DaskExecutor(address, connect_timeout=0.5)
        with pytest.raises(SchedulerUnavailable, match=f"Dask scheduler at {address}"):
            await run_handler(workers.square, [1], executor=executor)


async def test_a_setup_failing_on_the_workers_fails_the_start(
    dask_cluster: LocalCluster, dask_client: Client
) -> None:
    executor = DaskExecutor(dask_cluster.scheduler_address)
    with pytest.raises(HandlerSetupError, match="model.bin") as failed:
        await run_handler(workers.FailingSetup(), [1], executor=executor)

    assert failed.value.node == "handler"
    assert dask_client.run(lambda: None)  # the workers are still there


async def test_a_client_is_accepted_as_it_is_and_left_open(
    dask_cluster: LocalCluster, dask_client: Client
) -> None:
    address = dask_cluster.scheduler_address
    pids = worker_pids(dask_client)
    async with Client(address, asynchronous=True, set_as_default=False) as on_this_loop:
        for given in (dask_client, on_this_loop, dask_client.get_executor()):
            run = await run_handler(workers.worker_pid, range(6), executor=given)
            assert run.dead_letters == []
            assert set(run.outputs) <= pids
        assert on_this_loop.status == "running"  # used, not closed
    assert dask_client.status == "running"


async def test_the_pipeline_wide_executor_can_be_a_dask_client(
    dask_cluster: LocalCluster, dask_client: Client
) -> None:
    sink = CollectingSink()
    ingest = HandlerNode("ingest", [1, 2, 3])
    work = HandlerNode("work", workers.worker_pid, [ingest], cpu=True)
    out = HandlerNode("out", sink, [work])
    async with asyncio.timeout(WORKER_TIMEOUT):
        await PipelineExecutor([ingest], [work, out], executor=dask_client).run()

    assert set(sink.items) <= worker_pids(dask_client)
