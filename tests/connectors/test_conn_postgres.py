"""PostgresSource and PostgresSink against a real PostgreSQL server (tests/postgres.py)."""

from __future__ import annotations

import asyncio
import datetime
import decimal
import tracemalloc
from typing import Any

import asyncpg
import pytest
from conn_helpers import TIMEOUT, collect, flatten
from postgres import PgServer

from asyncpipe import HandlerNode, Outcome, PipelineExecutor
from asyncpipe.connectors import IterableSource, PostgresSink, PostgresSource

SCHEMA = {"id": "bigint", "name": "text", "score": "double precision"}


async def fetch(dsn: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read on a connection of the test's own (what another client sees)."""
    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(row) for row in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


async def load(dsn: str, batches: list[list[Any]], **sink_options: Any) -> PipelineExecutor:
    source = HandlerNode("source", batches)
    save = HandlerNode("save", PostgresSink(dsn, "clients", **sink_options), [source])
    executor = PipelineExecutor([source], [save])
    await asyncio.wait_for(executor.run(), TIMEOUT)
    return executor


# -- the source ------------------------------------------------------------------------


async def test_a_query_streams_in_batches_with_bound_parameters(pg_dsn: str) -> None:
    query = "SELECT g AS n, 'row ' || g AS label FROM generate_series(1, $1) g WHERE g % $2 = 0"
    messages, executor = await collect(PostgresSource(pg_dsn, query, (1000, 2), batch_size=200))
    assert [len(m) for m in messages] == [200, 200, 100]
    assert flatten(messages)[:2] == [{"n": 2, "label": "row 2"}, {"n": 4, "label": "row 4"}]
    assert executor.dead_letters == []


async def test_a_big_result_streams_in_constant_memory(pg_dsn: str) -> None:
    # 30,000 rows of 2 kB (60 MB) through 500-row batches: what is held at any moment is
    # a batch or two, never the result.
    query = "SELECT g AS n, repeat('x', 2000) AS pad FROM generate_series(1, 30000) g"
    source = PostgresSource(pg_dsn, query, batch_size=500)
    rows = 0
    tracemalloc.start()
    try:
        async for batch in source:
            rows += len(batch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == 30000
    assert peak < 10_000_000, f"peak {peak / 1e6:.1f} MB"


async def test_a_bad_query_fails_the_source_naming_it(pg_dsn: str) -> None:
    with pytest.raises(asyncpg.UndefinedTableError) as caught:
        async for _ in PostgresSource(pg_dsn, "SELECT * FROM nowhere"):
            pass
    assert "in query 'SELECT * FROM nowhere'" in "".join(caught.value.__notes__)


async def test_the_source_cannot_write(pg_dsn: str) -> None:
    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        async for _ in PostgresSource(pg_dsn, "CREATE TABLE t AS SELECT 1 AS x"):
            pass


# -- the sink --------------------------------------------------------------------------


async def test_a_declared_schema_creates_the_table_with_the_key(pg_dsn: str) -> None:
    batches = [[{"id": n, "name": f"c{n}", "score": n / 2} for n in range(i, i + 100)]
               for i in range(0, 300, 100)]  # fmt: skip
    executor = await load(pg_dsn, batches, key="id", schema=SCHEMA)
    assert executor.dead_letters == []
    assert await fetch(pg_dsn, "SELECT count(*), sum(id), sum(score) FROM clients") == [
        (300, sum(range(300)), sum(range(300)) / 2)
    ]
    key = "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
    key += "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'clients'::regclass AND i.indisprimary"
    assert await fetch(pg_dsn, key) == [("id",)]


async def test_without_a_schema_the_first_batch_decides_columns_and_types(pg_dsn: str) -> None:
    record = {
        "id": 1,
        "vip": True,
        "amount": decimal.Decimal("10.50"),
        "day": datetime.date(2024, 5, 1),
        "note": None,
        "score": 0.5,
    }
    await load(pg_dsn, [[record]], key="id")
    types = await fetch(
        pg_dsn,
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = 'clients' ORDER BY ordinal_position",
    )
    assert types == [
        ("id", "bigint"),
        ("vip", "boolean"),
        ("amount", "numeric"),
        ("day", "date"),
        ("note", "text"),
        ("score", "double precision"),
    ]
    assert await fetch(pg_dsn, "SELECT amount, day FROM clients") == [
        (decimal.Decimal("10.50"), datetime.date(2024, 5, 1))
    ]


async def test_a_replayed_batch_upserts_and_creates_no_duplicates(pg_dsn: str) -> None:
    first = [{"id": n, "name": "old", "score": 1.0} for n in range(50)]
    replay = [{"id": n, "name": "new", "score": 2.0} for n in range(25, 75)]
    await load(pg_dsn, [first, first], key="id", schema=SCHEMA)
    await load(pg_dsn, [replay, replay], key="id", schema=SCHEMA)
    assert await fetch(
        pg_dsn, "SELECT name, count(*) FROM clients GROUP BY name ORDER BY name"
    ) == [
        ("new", 50),
        ("old", 25),
    ]


async def test_a_key_repeated_within_a_batch_keeps_the_last_values(pg_dsn: str) -> None:
    batch = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 1, "name": "c"}]
    executor = await load(pg_dsn, [batch], key="id", schema=SCHEMA)
    assert executor.dead_letters == []
    assert await fetch(pg_dsn, "SELECT id, name FROM clients ORDER BY id") == [(1, "c"), (2, "b")]


async def test_an_existing_table_gets_a_unique_index_on_the_key(pg_dsn: str) -> None:
    await fetch(pg_dsn, "CREATE TABLE clients (id bigint, name text)")
    await load(pg_dsn, [[{"id": 1, "name": "a"}], [{"id": 1, "name": "b"}]], key="id")
    assert await fetch(pg_dsn, "SELECT id, name FROM clients") == [(1, "b")]


async def test_refused_rows_are_dead_letters_and_the_rest_is_committed(pg_dsn: str) -> None:
    await fetch(
        pg_dsn,
        "CREATE TABLE clients (id bigint PRIMARY KEY, name text NOT NULL, "
        "score double precision CHECK (score >= 0))",
    )
    batch: list[Any] = [{"id": n, "name": f"c{n}", "score": 1.0} for n in range(20)]
    batch[3] = {"id": 3, "name": None}  # NOT NULL
    batch[7] = {"id": 7, "name": "neg", "score": -1.0}  # CHECK
    batch[11] = {"id": "eleven", "name": "type"}  # not a bigint (asyncpg refuses it)
    batch[12] = "not a record"
    batch[13] = {"name": "no key"}
    ingress = HandlerNode("ingress")
    save = HandlerNode("save", PostgresSink(pg_dsn, "clients", key="id"), [ingress])
    async with PipelineExecutor([ingress], [save]) as executor:
        receipt = await executor.submit("ingress", batch)
        await receipt.wait(TIMEOUT)
    assert receipt.items[Outcome.COMMITTED] == 15 and receipt.items[Outcome.DEAD_LETTERED] == 5
    stored = [row[0] for row in await fetch(pg_dsn, "SELECT id FROM clients ORDER BY id")]
    assert stored == [n for n in range(20) if n not in (3, 7, 11, 12, 13)]
    letters = {d.index: d.error_message for d in executor.dead_letters}
    where = "PostgresSink(table 'clients')"
    assert letters[3].startswith(f"{where}: NotNullViolationError")
    assert letters[7].startswith(f"{where}: CheckViolationError")
    assert letters[11].startswith(f"{where}: DataError")
    assert letters[12] == f"{where}: not a dict record (str)"
    assert letters[13] == f"{where}: no value for key column(s) id"


async def test_a_receipt_resolves_only_once_its_rows_are_committed(pg_dsn: str) -> None:
    ingress = HandlerNode("ingress")
    save = HandlerNode("save", PostgresSink(pg_dsn, "clients", key="id", schema=SCHEMA), [ingress])
    async with PipelineExecutor([ingress], [save]) as executor:
        for n in range(5):
            receipt = await executor.submit("ingress", [{"id": n, "name": "x"}])
            await receipt.wait(TIMEOUT)
            assert await fetch(pg_dsn, "SELECT count(*) FROM clients") == [(n + 1,)]


class _TogetherSink(PostgresSink):
    """Holds every call until ``calls`` of them run at once; counts its connections."""

    def __init__(self, dsn: str, calls: int) -> None:
        super().__init__(dsn, "clients", key="id", schema=SCHEMA)
        self.barrier = asyncio.Barrier(calls)
        self.opened: int | None = None

    async def handle(self, data: Any) -> None:
        async with asyncio.timeout(TIMEOUT):
            await self.barrier.wait()
        await super().handle(data)

    async def teardown(self) -> None:
        assert self.connections is not None
        self.opened = self.connections.opened
        await super().teardown()


@pytest.mark.parametrize("workers", [1, 3])
async def test_the_sink_holds_one_connection_per_worker(pg_dsn: str, workers: int) -> None:
    sink = _TogetherSink(pg_dsn, workers)
    batches = [[{"id": n, "name": "x"}] for n in range(4 * workers)]
    source = HandlerNode("source", batches)
    save = HandlerNode("save", sink, [source], workers=workers)
    await asyncio.wait_for(PipelineExecutor([source], [save]).run(), TIMEOUT)
    assert sink.opened == workers
    assert await fetch(pg_dsn, "SELECT count(*) FROM clients") == [(4 * workers,)]
    # Closed at teardown: the server sees only the connection asking.
    connected = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    assert await fetch(pg_dsn, connected) == [(1,)]


async def _cut_connections(dsn: str) -> int:
    """Terminate every other backend of the test's database; return how many."""
    rows = await fetch(
        dsn,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    return len(rows)


async def _survives(dsn: str, interrupt: Any) -> tuple[PipelineExecutor, PostgresSink]:
    """Write a batch, ``await interrupt()``, write another: both committed."""
    sink = PostgresSink(dsn, "clients", key="id", schema=SCHEMA)
    ingress = HandlerNode("ingress")
    save = HandlerNode("save", sink, [ingress], retries=5, backoff=0.05)
    async with PipelineExecutor([ingress], [save]) as executor:
        first = await executor.submit("ingress", [{"id": 1, "name": "before"}])
        await first.wait(TIMEOUT)
        assert sink.connections is not None and sink.connections.open == 1
        await interrupt()
        second = await executor.submit("ingress", [{"id": 2, "name": "after"}])
        await second.wait(30)
        assert second.committed == 1
        assert sink.connections.opened == 2  # the lost one replaced
    return executor, sink


async def test_a_connection_lost_mid_write_is_retried_on_a_new_one(pg_dsn: str) -> None:
    # The first INSERT's backend terminates itself (a sequence is not rolled back, so the
    # second attempt passes): the write fails with the connection, the node retries.
    await fetch(pg_dsn, "CREATE TABLE clients (id bigint PRIMARY KEY, name text, score float8)")
    await fetch(pg_dsn, "CREATE SEQUENCE inserts")
    await fetch(
        pg_dsn,
        "CREATE FUNCTION cut_once() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF nextval('inserts') = 1 THEN PERFORM pg_terminate_backend(pg_backend_pid()); "
        "END IF; RETURN NULL; END $$",
    )
    await fetch(
        pg_dsn,
        "CREATE TRIGGER cut BEFORE INSERT ON clients "
        "FOR EACH STATEMENT EXECUTE FUNCTION cut_once()",
    )
    sink = PostgresSink(pg_dsn, "clients", key="id")
    ingress = HandlerNode("ingress")
    save = HandlerNode("save", sink, [ingress], retries=2, backoff=0.01)
    async with PipelineExecutor([ingress], [save]) as executor:
        receipt = await executor.submit("ingress", [{"id": 1, "name": "kept"}])
        await receipt.wait(TIMEOUT)
        assert sink.connections is not None and sink.connections.opened == 2
    assert receipt.committed == 1 and executor.dead_letters == []
    assert executor.metrics()["save"].retries == 1
    assert await fetch(pg_dsn, "SELECT id, name FROM clients") == [(1, "kept")]


async def test_an_idle_connection_cut_is_replaced(pg_dsn: str) -> None:
    async def cut() -> None:
        assert await _cut_connections(pg_dsn) == 1

    executor, _ = await _survives(pg_dsn, cut)
    assert executor.dead_letters == []
    assert await fetch(pg_dsn, "SELECT id, name FROM clients ORDER BY id") == [
        (1, "before"),
        (2, "after"),
    ]


async def test_a_server_restart_is_survived(pg_server: PgServer, pg_dsn: str) -> None:
    async def restart() -> None:
        await asyncio.to_thread(pg_server.restart)

    executor, _ = await _survives(pg_dsn, restart)
    assert executor.dead_letters == []
    assert await fetch(pg_dsn, "SELECT count(*) FROM clients") == [(2,)]


async def test_the_sink_works_without_a_pipeline(pg_dsn: str) -> None:
    async with PostgresSink(pg_dsn, "clients", key="id", schema=SCHEMA) as sink:
        await sink.handle({"id": 1, "name": "one"})
        await sink.handle([{"id": 1, "name": "uno"}, {"id": 2, "name": "dos"}])
    assert await fetch(pg_dsn, "SELECT id, name FROM clients ORDER BY id") == [
        (1, "uno"),
        (2, "dos"),
    ]


async def test_a_csv_like_stream_round_trips(pg_dsn: str) -> None:
    rows = [{"id": n, "name": f"n{n}", "score": float(n)} for n in range(2000)]
    source = HandlerNode("source", IterableSource(rows, batch_size=300))
    save = HandlerNode("save", PostgresSink(pg_dsn, "clients", key="id"), [source], workers=2)
    await asyncio.wait_for(PipelineExecutor([source], [save]).run(), TIMEOUT)
    back, _ = await collect(PostgresSource(pg_dsn, "SELECT * FROM clients ORDER BY id"))
    assert flatten(back) == rows
