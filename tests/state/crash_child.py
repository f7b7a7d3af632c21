"""The process the crash test kills: a keyed, windowed pipeline with its state, results
and dead letters in one SQLite file, fed by a driver that plays the clients.

Usage: ``python crash_child.py DIR``. ``DIR/plan.json`` lists the batches to send, in
order, as ``[batch_id, records]``; ``DIR/acked`` holds the positions the clients already
saw acknowledged (one per line), which are not sent again. Every other position is
submitted in plan order with ``origin=batch_id`` (up to 6 in flight), and ``ack N`` is
printed when its receipt resolves. Once all are acknowledged the pipeline stops gracefully
(its windows still open are emitted) and ``done`` is printed.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from asyncpipe import HandlerNode, PipelineExecutor
from asyncpipe.connectors import SqliteDeadLetterSink, SqliteSink
from asyncpipe.state import SqliteStateStore, Tumbling, Windowed, count, stateful_map, total

WINDOW = 10
LATENESS = 3
IN_FLIGHT = 6


def numbered(seen: int, record: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return seen + 1, {"k": record["k"], "seq": seen + 1, "t": record["t"]}


def pipeline(db: Path) -> PipelineExecutor:
    ingest = HandlerNode("ingest")
    windows = Windowed(
        Tumbling(WINDOW),
        {"n": count(), "sum": total("v")},
        event_time="t",
        allowed_lateness=LATENESS,
    )
    win = HandlerNode("win", windows, [ingest], key="k")
    counter = HandlerNode(
        "counter", stateful_map(numbered, lambda key: 0), [ingest], key="k", workers=2
    )
    win_sink = HandlerNode(
        "win_sink",
        SqliteSink(
            db,
            "windows",
            key=("key", "start"),
            schema={
                "key": "TEXT",
                "start": "INTEGER",
                "end": "INTEGER",
                "n": "INTEGER",
                "sum": "INTEGER",
            },
        ),
        [win],
    )
    count_sink = HandlerNode(
        "count_sink",
        SqliteSink(
            db, "counts", key=("k", "seq"), schema={"k": "TEXT", "seq": "INTEGER", "t": "REAL"}
        ),
        [counter],
    )
    return PipelineExecutor(
        [ingest],
        [win, counter, win_sink, count_sink],
        state_store=SqliteStateStore(db),
        dead_letter_sink=SqliteDeadLetterSink(db),
    )


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(folder: Path) -> None:
    plan: list[tuple[str, list[dict[str, Any]]]] = json.loads((folder / "plan.json").read_text())
    acked_file = folder / "acked"
    acked = {int(line) for line in acked_file.read_text().split()} if acked_file.exists() else set()
    executor = pipeline(folder / "results.db")
    room = asyncio.Semaphore(IN_FLIGHT)

    async def follow(position: int, receipt: Any) -> None:
        try:
            await receipt
        finally:
            room.release()
        say(f"ack {position}")

    async with executor:
        say("ready")
        async with asyncio.TaskGroup() as group:
            for position, (batch_id, records) in enumerate(plan):
                if position in acked:
                    continue
                await room.acquire()
                receipt = await executor.submit("ingest", records, origin=batch_id)
                group.create_task(follow(position, receipt), name=f"follow:{position}")
    say("done")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
