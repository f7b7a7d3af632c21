"""PostgresStateStore beyond the protocol (``test_state_stores.py`` runs that over it):
a restart equal to an uninterrupted run, lost connections replaced, a failing commit
stopping the node, several stores (processes) on one database."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import asyncpg
import pytest
from pipelines import TIMEOUT

from asyncpipe import HandlerError, HandlerNode, PipelineExecutor
from asyncpipe.state import (
    MemoryStateStore,
    PostgresStateStore,
    StateCommit,
    StateStore,
    stateful_map,
)
from asyncpipe.testing import CollectingSink

Record = dict[str, Any]
Plan = list[tuple[str, list[Record]]]


async def sql(dsn: str, query: str) -> list[tuple[Any, ...]]:
    """Run ``query`` on a connection of the test's own (what another client sees)."""
    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(row) for row in await conn.fetch(query)]
    finally:
        await conn.close()


def numbered(seen: int, record: Record) -> tuple[int, Record]:
    return seen + 1, {"k": record["k"], "seq": seen + 1, "v": record["v"]}


async def run(store: StateStore, plan: Plan) -> list[Record]:
    """ingest -> numbering per key (2 lanes) -> sink; every batch of ``plan`` submitted with
    its origin, in order; returns what reached the sink."""
    sink = CollectingSink()
    ingest = HandlerNode("ingest")
    node = HandlerNode(
        "number", stateful_map(numbered, lambda key: 0), [ingest], key="k", workers=2
    )
    out = HandlerNode("sink", sink, [node])
    async with asyncio.timeout(TIMEOUT):
        async with PipelineExecutor([ingest], [node, out], state_store=store) as executor:
            receipts = [await executor.submit("ingest", b, origin=o) for o, b in plan]
            for receipt in receipts:
                await receipt
    return [record for message in sink.items for record in message]


async def test_a_restart_with_replays_equals_an_uninterrupted_run(pg_dsn: str) -> None:
    plan: Plan = [
        (f"b{i}", [{"k": f"k{(i * 7 + j) % 5}", "v": i * 10 + j} for j in range(i % 4)])
        for i in range(40)
    ]
    first = await run(PostgresStateStore(pg_dsn), plan[:25])
    # The restarted process gets b20..b24 again (their acks were lost), then the rest.
    second = await run(PostgresStateStore(pg_dsn), plan[20:])
    whole_store = MemoryStateStore(persistent=True)
    whole = await run(whole_store, plan)

    def key(r: Record) -> tuple[str, int]:
        return r["k"], r["seq"]

    # Every output once: the replays changed nothing and emitted nothing again.
    assert sorted(first + second, key=key) == sorted(whole, key=key)
    stored = await sql(pg_dsn, "SELECT key, value FROM asyncpipe_state WHERE ns = 'number'")
    expected = await whole_store.scan("number")
    assert {pickle.loads(k): pickle.loads(v) for k, v in stored} == {
        pickle.loads(k): pickle.loads(v) for k, v in expected
    }
    # Every mark's outputs delivered: a third start would send nothing again.
    assert await sql(pg_dsn, "SELECT count(outputs) FROM asyncpipe_marks") == [(0,)]


async def _cut(dsn: str) -> int:
    """Terminate every other backend of the test's database; return how many."""
    rows = await sql(
        dsn,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    return len(rows)


async def test_a_connection_lost_between_calls_is_replaced(pg_dsn: str) -> None:
    store = PostgresStateStore(pg_dsn)
    await store.open()
    try:
        await store.commit("n", StateCommit(changes=[(b"a", b"1")]))
        assert await _cut(pg_dsn) == 1
        assert await store.load("n", [b"a"]) == {b"a": b"1"}
        assert await _cut(pg_dsn) == 1
        await store.commit("n", StateCommit(changes=[(b"a", b"2")]))
        assert await store.load("n", [b"a"]) == {b"a": b"2"}
        assert store.connections.opened == 3
    finally:
        await store.aclose()


async def test_a_commit_cut_mid_statement_is_sent_once_more(pg_dsn: str) -> None:
    store = PostgresStateStore(pg_dsn)
    await store.open()
    # The first insert of marks kills its own backend: the commit fails with its
    # connection, nothing of it is written; the store sends it again on a new one.
    await sql(pg_dsn, "CREATE SEQUENCE inserts")
    await sql(
        pg_dsn,
        "CREATE FUNCTION cut_once() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF nextval('inserts') = 1 THEN PERFORM pg_terminate_backend(pg_backend_pid()); "
        "END IF; RETURN NULL; END $$",
    )
    await sql(
        pg_dsn,
        "CREATE TRIGGER cut BEFORE INSERT ON asyncpipe_marks "
        "FOR EACH STATEMENT EXECUTE FUNCTION cut_once()",
    )
    try:
        await store.commit("n", StateCommit(changes=[(b"a", b"1")], marks=[("m", b"", b"o")]))
        assert store.connections.opened == 2
    finally:
        await store.aclose()
    assert await sql(pg_dsn, "SELECT nextval('inserts')") == [(3,)]  # two attempts
    assert await sql(pg_dsn, "SELECT key, value FROM asyncpipe_state") == [(b"a", b"1")]
    assert await sql(pg_dsn, "SELECT name, outputs FROM asyncpipe_marks") == [("m", b"o")]


async def test_a_commit_that_fails_stops_the_node(pg_dsn: str) -> None:
    store = PostgresStateStore(pg_dsn)
    await store.open()
    await store.aclose()
    await sql(
        pg_dsn,
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'no more state'; END $$",
    )
    await sql(
        pg_dsn,
        "CREATE TRIGGER refuse BEFORE INSERT ON asyncpipe_state "
        "FOR EACH ROW EXECUTE FUNCTION refuse()",
    )
    with pytest.raises(HandlerError, match="state store commit failed.*no more state"):
        await run(PostgresStateStore(pg_dsn), [("b1", [{"k": "a", "v": 1}])])
    assert await sql(pg_dsn, "SELECT count(*) FROM asyncpipe_marks") == [(0,)]


async def test_stores_of_several_processes_share_one_database(pg_dsn: str) -> None:
    one, two = PostgresStateStore(pg_dsn), PostgresStateStore(pg_dsn)
    await asyncio.gather(one.open(), two.open())  # both create the schema: no error
    try:
        await one.commit("n", StateCommit(changes=[(b"a", b"1")], marks=[("m", b"r", None)]))
        assert await two.seen("n", ["m"]) != {}  # a replay for the other process too
        assert await two.load("n", [b"a"]) == {b"a": b"1"}
    finally:
        await asyncio.gather(one.aclose(), two.aclose())


def test_the_store_says_where_it_is_without_its_password() -> None:
    store = PostgresStateStore("postgresql://me:secret@db.example/app")
    assert repr(store) == "<PostgresStateStore 'postgresql://me@db.example/app'>"
    with pytest.raises(ValueError, match="max_connections"):
        PostgresStateStore("postgresql://db.example/app", max_connections=0)
