"""A pipeline with an endless source, run by ``PipelineExecutor.start()``, for signal tests.

Usage: ``python signal_pipeline.py drain|hang|cpu``

Writes ``ready`` once the sink has its first message (signal handlers are installed by
then), ``teardown`` from the sink's teardown(), and, if ``start()`` returns,
``finished emitted=<source outputs> committed=<sink commits>``. In ``hang`` mode the sink
never finishes its first message, so only an abort can end the run. In ``cpu`` mode the
messages go through a ``cpu=True`` node (two worker processes) on their way to the sink.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator

from asyncpipe import BaseHandler, HandlerNode, PipelineExecutor


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def square(message: int) -> int:
    return message * message


async def endless() -> AsyncIterator[int]:
    i = 0
    while True:
        yield i
        i += 1


class Sink(BaseHandler):
    def __init__(self, hang: bool) -> None:
        self.hang = hang
        self.seen = 0

    async def handle(self, message: int) -> None:
        self.seen += 1
        if self.seen == 1:
            say("ready")
        if self.hang:
            await asyncio.Event().wait()
        await asyncio.sleep(0)

    async def teardown(self) -> None:
        say("teardown")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    mode = sys.argv[1]
    source = HandlerNode("endless", endless)
    stages = [HandlerNode("square", square, [source], cpu=True)] if mode == "cpu" else []
    sink = HandlerNode("sink", Sink(hang=mode == "hang"), [*stages, source][:1], capacity=8)
    executor = PipelineExecutor([source], [*stages, sink], max_workers=2)
    executor.start()
    metrics = executor.metrics()
    say(f"finished emitted={metrics['endless'].emitted} committed={metrics['sink'].committed}")


if __name__ == "__main__":
    main()
