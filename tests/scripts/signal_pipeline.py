"""A pipeline with an endless source, run by ``PipelineExecutor.start()``, for signal tests.

Usage: ``python signal_pipeline.py drain|hang``

Writes ``ready`` once the sink has its first message (signal handlers are installed by
then), ``teardown`` from the sink's teardown(), and, if ``start()`` returns,
``finished emitted=<source outputs> committed=<sink commits>``. In ``hang`` mode the sink
never finishes its first message, so only an abort can end the run.
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
    source = HandlerNode("endless", endless)
    sink = HandlerNode("sink", Sink(hang=sys.argv[1] == "hang"), [source], capacity=8)
    executor = PipelineExecutor([source], [sink])
    executor.start()
    metrics = executor.metrics()
    say(f"finished emitted={metrics['endless'].emitted} committed={metrics['sink'].committed}")


if __name__ == "__main__":
    main()
