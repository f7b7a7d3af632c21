"""``python -m bench.loop_cpu``: the event loop's CPU time per batch in the demo pipeline.

Builds the demo's ``--serve`` pipeline (durable state on) in this process and feeds
200-item transaction batches straight into ``classify`` -- converted from protobuf as the
gRPC intake does, no gRPC -- from ``--concurrency`` submitters, each awaiting its batch's
receipt before sending the next. Prints the loop thread's CPU time per batch
(``time.thread_time``) and the garbage collector's share of it.

CPU time, unlike a load test's throughput, hardly depends on how much of a core the
process gets, so it compares two builds on a busy machine (alternate them); a loaded
machine still inflates it (shared caches and cores), so compare within a session.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asyncpipe import run
from asyncpipe.demo.__main__ import GC_THRESHOLD, SWITCH_INTERVAL

__all__ = ["main"]


class _Collections:
    """The collector's passes and their CPU time (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.passes = 0
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.thread_time()
        else:
            self.passes += 1
            self.seconds += time.thread_time() - self._started


async def _measure(workdir: Path, batches: int, concurrency: int, default_gc: bool) -> str:
    from asyncpipe.demo._converters import transaction_converter
    from asyncpipe.demo._data import Scale, generate
    from asyncpipe.demo._model import train
    from asyncpipe.demo._pipeline import DemoConfig, build_pipeline, reset_outputs
    from loadtest._load import _template

    scale = Scale(clients=1000, transactions=1000, new=100, as_of=datetime.date.today().isoformat())
    config = DemoConfig(workdir=workdir, scale=scale, serve=True)
    made = generate(workdir, scale)
    model = train(scale.seed)
    reset_outputs(config, inputs_changed=made)
    executor = build_pipeline(config, model)
    convert = transaction_converter()
    template = _template(200, 0)
    numbers = iter(range(batches))

    async def submitter() -> None:
        for n in numbers:
            records = []
            for k, item in enumerate(template.transactions):
                item.id = 10**12 + n * len(template.transactions) + k
                records.append(convert(item))
            await (await executor.submit("classify", records, origin=f"loop-cpu-{n}"))

    async with executor:
        await asyncio.sleep(3.0)  # let the start-up sources drain: a start line, not work
        gc.freeze()  # as the demo server does once serving
        if not default_gc:
            gc.set_threshold(*GC_THRESHOLD)
        collections = _Collections()
        gc.callbacks.append(collections)
        cpu, wall = time.thread_time(), time.perf_counter()
        await asyncio.gather(*(submitter() for _ in range(concurrency)))
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
        gc.callbacks.remove(collections)
        executor.stop()
    return (
        f"{concurrency} submitter(s), {batches} batches: loop CPU {1000 * cpu / batches:.2f} "
        f"ms/batch (of which gc {1000 * collections.seconds / batches:.2f} ms, "
        f"{collections.passes / batches:.2f} passes/batch); wall {1000 * wall / batches:.2f} "
        f"ms/batch"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.loop_cpu",
        description="The event loop's CPU time per batch in the demo pipeline (no gRPC).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--batches", type=int, default=300, help="batches measured")
    parser.add_argument(
        "--concurrency", type=int, default=20, help="submitters, each one batch at a time"
    )
    parser.add_argument(
        "--default-gc",
        action="store_true",
        help="keep Python's collector thresholds instead of the demo server's",
    )
    args = parser.parse_args(argv)
    if args.batches < 1 or args.concurrency < 1:
        parser.error("--batches and --concurrency must be >= 1")
    sys.setswitchinterval(SWITCH_INTERVAL)
    with tempfile.TemporaryDirectory(prefix="loop-cpu-") as tmp:
        print(run(_measure(Path(tmp), args.batches, args.concurrency, args.default_gc)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
