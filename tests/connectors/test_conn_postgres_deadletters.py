"""PostgresDeadLetterSink against a real PostgreSQL server (tests/postgres.py)."""

from __future__ import annotations

import asyncpg
from conn_helpers import TIMEOUT

from asyncpipe import DeadLetter, HandlerNode, PipelineExecutor
from asyncpipe.connectors import PostgresDeadLetterSink, PostgresSink


async def rows(dsn: str, sql: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(row) for row in await conn.fetch(sql)]
    finally:
        await conn.close()


async def test_a_pipeline_s_rejects_land_in_the_table(pg_dsn: str) -> None:
    ingress = HandlerNode("ingress")
    save = HandlerNode("save", PostgresSink(pg_dsn, "clients", key="id"), [ingress])
    async with PostgresDeadLetterSink(pg_dsn) as letters:
        async with PipelineExecutor([ingress], [save], dead_letter_sink=letters) as executor:
            receipt = await executor.submit("ingress", [{"id": 1}, {"name": "no id"}], origin="b1")
            await receipt.wait(TIMEOUT)
    assert await rows(
        pg_dsn, "SELECT node, error_type, item_index, origin, payload, attempts FROM dead_letters"
    ) == [("save", "Rejected", 1, "b1", '{"name":"no id"}', 1)]


async def test_a_replayed_input_is_stored_once_and_letters_without_origin_each_time(
    pg_dsn: str,
) -> None:
    with_origin = DeadLetter("n", "ValueError", "bad", {"x": 1}, origin="file.csv", index=3)
    without = DeadLetter("n", "ValueError", "bad\x00byte", [1, 2])
    async with PostgresDeadLetterSink(pg_dsn, table="rejects") as letters:
        for _ in range(3):
            await letters.write(with_origin)
            await letters.write(without)
    assert await rows(
        pg_dsn, "SELECT origin, count(*) FROM rejects GROUP BY origin ORDER BY origin"
    ) == [("file.csv", 1), (None, 3)]
    assert await rows(
        pg_dsn, "SELECT DISTINCT error_message FROM rejects WHERE origin IS NULL"
    ) == [("bad\ufffdbyte",)]


async def test_a_lost_connection_is_opened_again(pg_dsn: str) -> None:
    async with PostgresDeadLetterSink(pg_dsn) as letters:
        await letters.write(DeadLetter("n", "E", "first", 1))
        await rows(
            pg_dsn,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        await letters.write(DeadLetter("n", "E", "second", 2))
    assert await rows(pg_dsn, "SELECT error_message FROM dead_letters ORDER BY id") == [
        ("first",),
        ("second",),
    ]
