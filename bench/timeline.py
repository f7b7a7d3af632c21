"""``python -m bench.timeline``: where a lone batch spends its time in the demo server.

Runs the demo's ``--serve`` pipeline in this process with probes on its stages (decode,
intake, each node's handler, the process-pool call, each sink's database or file thread,
the receipt, the reply), while a client in another process sends 200-item batches one at
a time, as ``python -m loadtest --clients 1`` does. One batch is in flight at a time, so
every probe firing between a call's arrival and its reply belongs to that batch. Prints,
per probe, the median time since the request was decoded, and the median of each
handler's own duration: the timeline of a lone batch.

The probes wrap functions from the outside (nothing in the library knows about them);
they cost a few microseconds each, so the figures are a little above an unprobed run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import functools
import gc
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from asyncpipe import run
from asyncpipe._handler import Kind
from asyncpipe._offload import WorkerPool
from asyncpipe._receipt import Receipt
from asyncpipe.connectors import _files, _sqlite_db
from asyncpipe.demo.__main__ import GC_THRESHOLD, SWITCH_INTERVAL
from asyncpipe.demo._pipeline import DemoConfig
from asyncpipe.ingest import _codec, _intake, _server
from asyncpipe.state import SqliteStateStore
from asyncpipe.state import _sqlite as _state_sqlite
from asyncpipe.state._keyed import _KeyedLane

__all__ = ["main"]

#: (perf_counter time, probe name), appended from the loop and from the sinks' threads.
EVENTS: list[tuple[float, str]] = []


def mark(name: str) -> None:
    EVENTS.append((time.perf_counter(), name))


# -- probes ----------------------------------------------------------------------------


def _wrap_sync(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def probed(*args: Any, **kwargs: Any) -> Any:
        mark(f"{name}>")
        try:
            return fn(*args, **kwargs)
        finally:
            mark(f"{name}<")

    return probed


def _wrap_async(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def probed(*args: Any, **kwargs: Any) -> Any:
        mark(f"{name}>")
        try:
            return await fn(*args, **kwargs)
        finally:
            mark(f"{name}<")

    return probed


def _wrap_async_gen(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def probed(*args: Any, **kwargs: Any) -> Any:
        mark(f"{name}>")
        async for out in fn(*args, **kwargs):
            mark(f"{name}:yield")
            yield out
        mark(f"{name}<")

    return probed


def _probe_ingest() -> None:
    lenient = _codec.lenient

    def probed_lenient(message_type: Any) -> Callable[[bytes], Any]:
        return _wrap_sync("decode", lenient(message_type))

    _codec.lenient = probed_lenient
    add_handlers = _codec.add_handlers

    def probed_add_handlers(server: Any, service: str, methods: Any) -> None:
        wrapped = {}
        for name, (behaviour, request, response, streaming) in methods.items():
            probed_response = type("Probed", (), {})
            probed_response.SerializeToString = _wrap_sync(  # type: ignore[attr-defined]
                "encode", response.SerializeToString
            )
            wrapped[name] = (
                behaviour if streaming else _wrap_async("rpc", behaviour),
                request,
                probed_response,
                streaming,
            )
        add_handlers(server, service, wrapped)

    vars(_server)["add_handlers"] = probed_add_handlers
    intake = _intake.Intake
    intake.handle = _wrap_async("intake.handle", intake.handle)  # type: ignore[method-assign]
    intake._submit = _wrap_async("intake.submit", intake._submit)  # type: ignore[method-assign]
    intake._reply = _wrap_sync("intake.reply", intake._reply)  # type: ignore[method-assign]
    # Names the modules import, not their exports: set as attributes, like any probe.
    convert_items = vars(_intake)["convert_items"]
    vars(_intake)["convert_items"] = _wrap_sync("intake.convert", convert_items)
    settle = Receipt._settle

    def probed_settle(self: Receipt, *args: Any, **kwargs: Any) -> None:
        settle(self, *args, **kwargs)
        if self._pending == 0:
            mark("receipt.resolved")

    Receipt._settle = probed_settle  # type: ignore[method-assign]


def _probe_io() -> None:
    db = _sqlite_db.Database
    db._write = _wrap_sync("sqlite.thread", db._write)  # type: ignore[method-assign]
    appending = _files.AppendingFile
    appending._append = _wrap_sync("csv.thread", appending._append)  # type: ignore[method-assign]
    WorkerPool.call = _wrap_async("pool.call", WorkerPool.call)  # type: ignore[method-assign]


def _wrap_named(suffix: str, fn: Callable[..., Any], name_of: Callable[..., str]) -> Any:
    """An async method probed under ``<name_of(self, *args)>.<suffix>``."""

    @functools.wraps(fn)
    async def probed(self: Any, *args: Any) -> Any:
        name = f"{name_of(self, *args)}.{suffix}"
        mark(f"{name}>")
        try:
            return await fn(self, *args)
        finally:
            mark(f"{name}<")

    return probed


def _probe_state() -> None:
    """The stateful nodes (``aggregate``, ``totals``, ``join``): each lane's apply of a
    message, and the state store's calls (look-ups of names and keys, the commit)."""
    lane = _KeyedLane
    lane.apply = _wrap_named("apply", lane.apply, lambda self, *_: self.namespace)  # type: ignore[method-assign]
    store = SqliteStateStore
    for method in ("seen", "load", "commit"):
        wrapped = _wrap_named(method, getattr(store, method), lambda self, ns, *_: ns)
        setattr(store, method, wrapped)
    # The commit's transaction on the state file's thread.
    vars(_state_sqlite)["_commit"] = _wrap_sync("state.thread", vars(_state_sqlite)["_commit"])


def _probe_nodes(executor: Any) -> None:
    wrappers = {
        Kind.SYNC: _wrap_sync,
        Kind.ASYNC: _wrap_async,
        Kind.ASYNC_GEN: _wrap_async_gen,
    }
    for name, node in executor.graph.nodes.items():
        adapted = node.handler
        if adapted is None or node.cpu or adapted.kind not in wrappers:
            continue
        object.__setattr__(adapted, "call", wrappers[adapted.kind](name, adapted.call))


# -- the server ------------------------------------------------------------------------


async def _serve(
    workdir: Path, batches: int, batch_size: int, clients: int, options: dict[str, Any]
) -> list[list[tuple[float, str]]]:
    from asyncpipe.demo._data import Scale, generate
    from asyncpipe.demo._model import train
    from asyncpipe.demo._pipeline import build_pipeline, reset_outputs
    from asyncpipe.demo.service import bank_server
    from asyncpipe.ingest import serve

    scale = Scale(clients=1000, transactions=1000, new=100, as_of=datetime.date.today().isoformat())
    config = DemoConfig(workdir=workdir, scale=scale, serve=True, **options)
    made = generate(workdir, scale)
    model = train(scale.seed)
    reset_outputs(config, inputs_changed=made)
    _probe_ingest()
    _probe_io()
    _probe_state()
    executor = build_pipeline(config, model)
    _probe_nodes(executor)
    server = bank_server(
        executor, clients="normalize", transactions="classify", scores="scores", port=0
    )
    depths: dict[str, list[int]] = {}

    def ready(server: Any) -> None:
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLD)  # as the demo server does

    async def drive() -> None:
        await server.ready.wait()
        await asyncio.sleep(2.0)  # let the start-up sources drain: a start line, not work
        command = ["-m", "bench.timeline", "--client", server.address, "--batch-size"]
        senders = [
            await asyncio.create_subprocess_exec(
                sys.executable, *command, str(batch_size), "--batches", str(batches)
            )
            for _ in range(clients)
        ]
        sampling = asyncio.create_task(_sample(executor, depths))
        for sender in senders:
            await sender.wait()
        sampling.cancel()
        EVENTS.append((time.perf_counter(), "end"))
        await server.stop(5.0)
        executor.stop()

    async with asyncio.TaskGroup() as group:
        group.create_task(drive())
        await serve(server, on_ready=ready, handle_signals=False)
    if clients > 1:
        _durations(EVENTS)
        print("mean queue depth of each node's input (sampled every 20 ms), and its bound:")
        for name, seen in sorted(depths.items(), key=lambda kv: -statistics.mean(kv[1])):
            capacity = executor.graph.nodes[name].capacity
            print(f"  {name:<24} {statistics.mean(seen):7.1f} / {capacity}")
    return _split(EVENTS)


async def _sample(executor: Any, depths: dict[str, list[int]]) -> None:
    while True:
        for name, node in executor.metrics().nodes.items():
            depths.setdefault(name, []).append(node.queue_depth)
        await asyncio.sleep(0.02)  # a sampling clock, not a wait for work


def _split(events: list[tuple[float, str]]) -> list[list[tuple[float, str]]]:
    """The events of each call, from its decode to the end of its reply's encoding (with
    several clients, calls overlap: only the totals and stage durations mean much)."""
    calls: list[list[tuple[float, str]]] = []
    current: list[tuple[float, str]] | None = None
    for event in sorted(events):
        if event[1] == "decode>":
            current = [event]
            continue
        if current is None:
            continue
        current.append(event)
        if event[1] == "encode<":
            calls.append(current)
            current = None
    return calls


def _report(calls: list[list[tuple[float, str]]]) -> None:
    calls = calls[len(calls) // 10 :]  # the first tenth warms up
    offsets: dict[str, list[float]] = {}
    order: dict[str, list[int]] = {}
    durations: dict[str, list[float]] = {}
    for call in calls:
        start = call[0][0]
        opened: dict[str, float] = {}
        seen: dict[str, int] = {}
        per_call: dict[str, float] = {}
        for position, (at, name) in enumerate(call):
            count = seen[name] = seen.get(name, 0) + 1
            key = name if count == 1 else f"{name}#{count}"
            offsets.setdefault(key, []).append((at - start) * 1000)
            order.setdefault(key, []).append(position)
            if name.endswith(">"):
                opened[name[:-1]] = at
            elif name.endswith("<") and name[:-1] in opened:
                base = name[:-1]
                per_call[base] = per_call.get(base, 0.0) + (at - opened.pop(base)) * 1000
        for base, spent in per_call.items():
            durations.setdefault(base, []).append(spent)
    total = [(call[-1][0] - call[0][0]) * 1000 for call in calls]
    print(f"{len(calls)} lone batches; decode -> reply encoded: median {_ms(total)}")
    print(f"{'probe':<34} {'at (ms)':>8} {'seen in':>8}")
    for key in sorted(offsets, key=lambda k: statistics.median(offsets[k])):
        seen_in = len(offsets[key]) / len(calls)
        if seen_in < 0.05:
            continue
        print(f"{key:<34} {statistics.median(offsets[key]):8.3f} {seen_in:8.0%}")
    print(f"\n{'stage':<34} {'median ms':>10} {'p90 ms':>8}")
    for base in sorted(durations, key=lambda b: -statistics.median(durations[b])):
        values = sorted(durations[base])
        p90 = values[int(0.9 * (len(values) - 1))]
        print(f"{base:<34} {statistics.median(values):10.3f} {p90:8.3f}")


def _durations(events: list[tuple[float, str]]) -> None:
    """Each probe's median duration over the whole run (for stages that run one call at a
    time: handlers of single-worker nodes, the database thread)."""
    opened: dict[str, float] = {}
    spent: dict[str, list[float]] = {}
    for at, name in sorted(events):
        if name.endswith(">"):
            opened[name[:-1]] = at
        elif name.endswith("<") and name[:-1] in opened:
            base = name[:-1]
            spent.setdefault(base, []).append((at - opened.pop(base)) * 1000)
    print(f"{'stage (whole run)':<34} {'median ms':>10} {'calls':>7}")
    for base in sorted(spent, key=lambda b: -statistics.median(spent[b])):
        print(f"{base:<34} {statistics.median(spent[base]):10.3f} {len(spent[base]):7d}")


def _ms(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.2f} ms (p10 {sorted(values)[len(values) // 10]:.2f})"


# -- the client ------------------------------------------------------------------------


async def _client(target: str, batches: int, batch_size: int) -> None:
    from asyncpipe.demo.service import BankClient
    from loadtest._load import _template

    batch = _template(batch_size, 0)
    base = 9_000_000_000_000 + random.randrange(10**9) * 10**6  # ids of this client
    rtts = []
    server = []
    async with BankClient(target, timeout=10.0, retries=0) as client:
        for n in range(batches):
            batch.batch_id = f"timeline-{base}-{n}"
            for k, tx in enumerate(batch.transactions):
                tx.id = base + n * batch_size + k
            started = time.perf_counter()
            reply = await client.send(batch)
            rtts.append((time.perf_counter() - started) * 1000)
            server.append(reply.processing_duration_seconds * 1000)
            if not reply.success:
                raise RuntimeError(reply.message)
    rtts, server = rtts[batches // 10 :], server[batches // 10 :]
    print(
        f"client: round trip p50 {statistics.median(rtts):.2f} ms, "
        f"server time p50 {statistics.median(server):.2f} ms"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.timeline",
        description="Where a lone batch spends its time in the demo server: per-stage probes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--batches", type=int, default=300, help="batches each client sends, one at a time"
    )
    parser.add_argument("--batch-size", type=int, default=200, help="transactions per batch")
    parser.add_argument(
        "--clients",
        type=int,
        default=1,
        help="client processes, each sending --batches batches one at a time; above 1 the "
        "report adds each node's mean input queue depth (where batches wait)",
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=SWITCH_INTERVAL,
        help="the server's sys.setswitchinterval(), seconds (the demo server's)",
    )
    parser.add_argument(
        "--sink-workers",
        type=int,
        default=DemoConfig.sink_workers,
        help="the demo's DemoConfig.sink_workers",
    )
    parser.add_argument("--risk-in-pool", action="store_true", help="the demo's --risk-in-pool")
    parser.add_argument("--client", help=argparse.SUPPRESS)  # the client process's target
    args = parser.parse_args(argv)
    if args.client:
        run(_client(args.client, args.batches, args.batch_size))
        return 0
    sys.setswitchinterval(args.switch_interval)
    with tempfile.TemporaryDirectory(prefix="timeline-") as tmp:
        options = {"sink_workers": args.sink_workers, "risk_in_pool": args.risk_in_pool}
        calls = run(_serve(Path(tmp), args.batches, args.batch_size, args.clients, options))
    if args.clients == 1:
        _report(calls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
