"""Connectors: file and SQLite sources and sinks, dead-letter sinks, and triggers.

Sources are async iterables: give one to a producer node. They stream -- a chunk of the
file, or ``batch_size`` rows of a query, at a time -- and emit lists of up to
``batch_size`` records (dicts), never holding a whole file in memory::

    from asyncpipe import HandlerNode, PipelineExecutor
    from asyncpipe.connectors import CsvSource, SqliteSink

    read = HandlerNode("read", CsvSource("clients.csv", batch_size=500, types={"id": int}))
    save = HandlerNode("save", SqliteSink("bank.db", "clients", key="id"), [read])
    await PipelineExecutor([read], [save]).run()

=========================  =============================================================
sources                    :class:`CsvSource`, :class:`TextSource` (lines or delimited
                           TXT), :class:`JsonLinesSource`, :class:`SqliteSource` (a
                           query), :class:`PostgresSource` (a query, server-side
                           cursor), :class:`IterableSource` (anything iterable, batched)
sinks (handlers)           :class:`SqliteSink`, :class:`PostgresSink` (idempotent
                           upserts), :class:`CsvSink`, :class:`JsonLinesSink` (appending
                           files)
dead-letter sinks          :class:`SqliteDeadLetterSink`, :class:`PostgresDeadLetterSink`
                           (a ``dead_letters`` table), :class:`JsonLinesDeadLetterSink`
triggers (sources)         :class:`TimerTrigger` (every ``interval`` seconds),
                           :class:`RequestTrigger` (each new file of a directory, once)
=========================  =============================================================

Malformed input never stops a source: a CSV row with the wrong number of fields, an
undecodable line, invalid JSON, a value its column type rejects become dead letters whose
reason starts with ``file:line:`` (``DeadLetter.index`` is the line number, the payload the
line's text), and the rest of the file flows. Sinks commit (SQLite) or flush (files)
before their handler returns, so a receipt resolves only once its records are stored.

Typed columns (``types={"amount": float, "day": date.fromisoformat, "vip": bool}``) take
any callable from text; ``bool`` reads ``true/false/yes/no/1/0``; an empty field becomes
``None`` (except for ``str``).

Bulk loads need no setting: when every node reading a ``CsvSource`` is a sink that
accepts rows of values (``SqliteSink`` or ``PostgresSink`` with a ``schema=``), the source
emits :class:`asyncpipe.Rows` -- lists of values in the file's column order, the column
names carried once per message -- which the sink maps onto its columns: no dict per row.
Any other consumer (a handler of yours) and it emits dicts. ``records="dicts"`` or
``"lists"`` fix the form (``docs/performance.md``, "CSV -> SQLite").

Triggers are sources too, keeping the original's signatures: ``TimerTrigger(node, interval,
max_runs)`` and ``RequestTrigger(node, suffix, watch_dir, poll_interval, max_checks)`` go in
a producer node, and ``node`` is the *handler* they fire at each tick or new file (its
return value is emitted), or ``None`` to emit the :class:`Tick` or file ``Path`` itself::

    HandlerNode("generate", TimerTrigger(new_transactions, interval=1.0, max_runs=60))
    HandlerNode("scores", RequestTrigger(lambda path: CsvSource(path), ".csv", "inbox"))

The PostgreSQL connectors need the ``[postgres]`` extra (``asyncpg``, imported when one
of them first connects); see ``docs/postgres.md``.
"""

from __future__ import annotations

from .._exports import claim_module as _claim_module
from ._batching import DEFAULT_BATCH_SIZE, IterableSource
from ._columns import parse_bool
from ._csv import CsvSource
from ._csv_sink import CsvSink
from ._deadletters import JsonLinesDeadLetterSink, SqliteDeadLetterSink
from ._jsonl import JsonLinesSink, JsonLinesSource
from ._postgres import PostgresSink, PostgresSource
from ._postgres_deadletters import PostgresDeadLetterSink
from ._sqlite import SqliteSink, SqliteSource
from ._text import TextSource
from ._timer import Tick, TimerTrigger
from ._watch import RequestTrigger

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "CsvSink",
    "CsvSource",
    "IterableSource",
    "JsonLinesDeadLetterSink",
    "JsonLinesSink",
    "JsonLinesSource",
    "PostgresDeadLetterSink",
    "PostgresSink",
    "PostgresSource",
    "RequestTrigger",
    "SqliteDeadLetterSink",
    "SqliteSink",
    "SqliteSource",
    "TextSource",
    "Tick",
    "TimerTrigger",
    "parse_bool",
]

# Public objects report the package as their module.
_claim_module(globals(), __all__, __name__)
