"""Serve a proto of your own into a pipeline with ``asyncpipe.ingest``.

``sensors.proto`` (beside this file, compiled into ``sensors_pb2*.py`` by
``python proto/generate.py``) declares a ``Sensors`` service: ``Record(ReadingBatch)`` and
a ``Stream`` of them, replied to with ``ReadingReply``. Nothing in it is asyncpipe's: the
server is told, per method, the node its batches go to and how one ``Reading`` becomes a
record (or an :class:`~asyncpipe.ingest.Invalid` with the reason).

Run ``python demo/own_proto/serve_sensors.py`` to serve on 127.0.0.1:50052 into
``readings.db`` until Ctrl-C; or ``--once`` to serve on a free port, send one batch (one
reading invalid) with :class:`~asyncpipe.ingest.IngestClient`, print the reply and stop.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import math
import sqlite3
import sys
from pathlib import Path
from typing import Any

import sensors_pb2 as pb

from asyncpipe import HandlerNode, PipelineExecutor, run
from asyncpipe.connectors import SqliteSink
from asyncpipe.ingest import IngestClient, IngestServer, Invalid, Route, new_batch_id, quoted, serve

SERVICE = pb.DESCRIPTOR.services_by_name["Sensors"]


def reading_record(reading: Any) -> dict[str, Any] | Invalid:
    """One ``Reading`` -> ``{sensor, at, celsius}``, or why it is refused."""
    if not reading.sensor:
        return Invalid("empty sensor name")
    try:
        datetime.datetime.fromisoformat(reading.at)
    except ValueError:
        return Invalid(f"malformed time {quoted(reading.at)}: expected ISO 8601")
    if not -90.0 <= reading.celsius <= 60.0 or math.isnan(reading.celsius):
        return Invalid(f"implausible temperature {reading.celsius!r} °C")
    return {"sensor": reading.sensor, "at": reading.at, "celsius": reading.celsius}


def pipeline(db: Path) -> PipelineExecutor:
    """``readings`` (the gRPC ingress) -> upserted into ``db``'s ``readings`` table."""
    ingress = HandlerNode("readings")
    sink = SqliteSink(
        db,
        "readings",
        key=("sensor", "at"),
        schema={"sensor": "TEXT", "at": "TEXT", "celsius": "REAL"},
    )
    return PipelineExecutor([ingress], [HandlerNode("store", sink, [ingress])])


def server(executor: PipelineExecutor, *, port: int = 0) -> IngestServer:
    """The ``Sensors`` service into ``executor``: ``Record`` batches (and ``Stream``
    batches, the same type) to the ``readings`` node."""
    route = Route("readings", items="readings", convert=reading_record)
    return IngestServer(executor, SERVICE, {"Record": route}, port=port)


async def send_one_batch(address: str) -> Any:
    """Send three readings, the second one invalid; returns the reply."""
    batch = pb.ReadingBatch(
        batch_id=new_batch_id(),
        readings=[
            pb.Reading(sensor="roof", at="2026-05-01T12:00:00+00:00", celsius=21.5),
            pb.Reading(sensor="roof", at="yesterday", celsius=20.0),
            pb.Reading(sensor="cellar", at="2026-05-01T12:00:00+00:00", celsius=12.25),
        ],
    )
    async with IngestClient(address, SERVICE) as client:
        return await client.send(batch)


async def once(db: Path) -> None:
    """Serve on a free port, send one batch, print the reply and the stored rows."""
    executor = pipeline(db)
    async with executor:
        ingest = server(executor)
        async with ingest:
            await ingest.ready.wait()
            reply = await send_one_batch(ingest.address)
        executor.stop()
    # An example program: its output is the point.
    print(f"success={reply.success} processed={reply.items_processed}")  # noqa: T201
    for rejection in reply.rejections:
        print(f"rejected #{rejection.index}: {rejection.reason}")  # noqa: T201
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT sensor, celsius FROM readings ORDER BY sensor").fetchall()
    print(rows)  # noqa: T201


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("readings.db"))
    parser.add_argument("--port", type=int, default=50052)
    parser.add_argument("--once", action="store_true", help="send one batch and stop")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    if args.once:
        asyncio.run(once(args.db))
    else:
        run(serve(server(pipeline(args.db), port=args.port)))


if __name__ == "__main__":
    main()
