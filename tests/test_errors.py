"""Failures: dead letters, retries, error policies, fail-fast, failing hooks and sinks."""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pipelines import TIMEOUT

from asyncpipe import (
    AsyncpipeError,
    BaseHandler,
    ChannelClosed,
    DeadLetter,
    DeadLetterSink,
    HandlerError,
    HandlerNode,
    PipelineAborted,
    PipelineClosed,
    PipelineExecutor,
    _errors,
    _source,
    reject,
)
from asyncpipe.testing import CollectingSink, run_handler, run_pipeline


class Unlucky(Exception):
    """The error the test handlers raise."""


def fail_on_thirteen(x: int) -> int:
    if x == 13:
        raise Unlucky(f"{x} is unlucky")
    return x


class FailTwice:
    """Fails its first two calls, then echoes."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, message: Any) -> Any:
        self.calls += 1
        if self.calls < 3:
            raise ConnectionError(f"attempt {self.calls}")
        return message


class ListSink:
    """A custom dead-letter sink."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def write(self, letter: DeadLetter) -> None:
        self.letters.append(letter)


class BrokenSink:
    async def write(self, letter: DeadLetter) -> None:
        raise OSError("dead-letter storage is down")


def pipeline(
    handler: Any, items: list[Any], **options: Any
) -> tuple[list[HandlerNode], list[HandlerNode], CollectingSink]:
    sink = CollectingSink()
    src = HandlerNode("src", items)
    node = HandlerNode("node", handler, [src], **options)
    out = HandlerNode("sink", sink, [node])
    return [src], [node, out], sink


# -- dead letters --------------------------------------------------------------------------


async def test_raising_handler_produces_a_dead_letter_describing_the_failure() -> None:
    run = await run_handler(fail_on_thirteen, [12, 13], timeout=10)
    [letter] = run.dead_letters
    assert letter.node == "handler"
    assert letter.error_type == "Unlucky"
    assert letter.error_message == "13 is unlucky"
    assert letter.payload == 13
    assert letter.attempts == 1
    assert letter.traceback is not None
    assert "fail_on_thirteen" in letter.traceback
    assert "Unlucky: 13 is unlucky" in letter.traceback


async def test_dead_letter_attempts_count_every_try() -> None:
    run = await run_handler(fail_on_thirteen, [13], retries=3, backoff=0, timeout=10)
    [letter] = run.dead_letters
    assert letter.attempts == 4


async def test_pipeline_finishes_and_other_messages_pass_after_a_failure() -> None:
    run = await run_handler(fail_on_thirteen, [11, 12, 13, 14], timeout=10)
    assert run.outputs == [11, 12, 14]
    assert len(run.dead_letters) == 1
    assert run.metrics.state == "closed"


async def test_failing_source_is_dead_lettered_and_the_pipeline_finishes() -> None:
    async def numbers() -> AsyncIterator[int]:
        yield 1
        raise Unlucky("source broke")

    sink = CollectingSink()
    src = HandlerNode("numbers", numbers)
    out = HandlerNode("sink", sink, [src])
    executor = await run_pipeline([src], [out], timeout=10)
    assert sink.items == [1]
    [letter] = executor.dead_letters
    assert (letter.node, letter.error_type) == ("numbers", "Unlucky")


# -- retries -------------------------------------------------------------------------------


async def test_retries_succeed_on_the_third_attempt() -> None:
    handler = FailTwice()
    run = await run_handler(handler, ["m"], retries=2, backoff=0, timeout=10)
    assert run.outputs == ["m"]
    assert run.dead_letters == []
    assert handler.calls == 3


async def test_too_few_retries_dead_letter_the_message() -> None:
    handler = FailTwice()
    run = await run_handler(handler, ["m"], retries=1, backoff=0, timeout=10)
    assert run.outputs == []
    [letter] = run.dead_letters
    assert (letter.error_type, letter.attempts) == ("ConnectionError", 2)


# -- policies ------------------------------------------------------------------------------


async def test_skip_policy_drops_the_message_without_a_dead_letter() -> None:
    run = await run_handler(fail_on_thirteen, [12, 13, 14], on_error="skip", timeout=10)
    assert run.outputs == [12, 14]
    assert run.dead_letters == []
    assert run.metrics["handler"].skipped == 1


async def test_fail_policy_makes_run_raise_handler_error_naming_the_node() -> None:
    producers, consumers, _ = pipeline(fail_on_thirteen, [13], on_error="fail")
    with pytest.raises(HandlerError, match="'node'") as info:
        await run_pipeline(producers, consumers, timeout=10)
    assert info.value.node == "node"
    assert "Unlucky" in str(info.value)


async def test_fail_policy_chains_the_original_exception_as_cause() -> None:
    producers, consumers, _ = pipeline(fail_on_thirteen, [13], on_error="fail")
    with pytest.raises(HandlerError) as info:
        await run_pipeline(producers, consumers, timeout=10)
    assert isinstance(info.value.__cause__, Unlucky)
    assert str(info.value.__cause__) == "13 is unlucky"


async def test_fail_policy_still_retries_first() -> None:
    handler = FailTwice()
    producers, consumers, sink = pipeline(handler, ["m"], on_error="fail", retries=2, backoff=0)
    await run_pipeline(producers, consumers, timeout=10)
    assert sink.items == ["m"]


# -- dead-letter sinks ---------------------------------------------------------------------


async def test_custom_dead_letter_sink_receives_the_letters() -> None:
    letters = ListSink()
    assert isinstance(letters, DeadLetterSink)
    producers, consumers, _ = pipeline(fail_on_thirteen, [13, 1, 13])
    executor = await run_pipeline(producers, consumers, timeout=10, dead_letter_sink=letters)
    assert [letter.payload for letter in letters.letters] == [13, 13]
    assert executor.dead_letters == []  # only the default in-memory sink keeps them there


async def test_raising_dead_letter_sink_does_not_crash_the_pipeline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    producers, consumers, sink = pipeline(fail_on_thirteen, [12, 13, 14])
    with caplog.at_level(logging.ERROR, logger="asyncpipe"):
        await run_pipeline(producers, consumers, timeout=10, dead_letter_sink=BrokenSink())
    assert sink.items == [12, 14]
    assert any("dead-letter sink failed" in record.getMessage() for record in caplog.records)


async def test_raising_dead_letter_sink_still_resolves_the_receipt() -> None:
    ingest = HandlerNode("ingest")
    node = HandlerNode("node", fail_on_thirteen, [ingest])
    sink = HandlerNode("sink", CollectingSink(), [node])
    async with asyncio.timeout(10):
        async with PipelineExecutor(
            [ingest], [node, sink], dead_letter_sink=BrokenSink()
        ) as executor:
            receipt = await executor.submit("ingest", 13)
            await receipt.wait(10)
    assert receipt.dead_lettered == 1


# -- setup ---------------------------------------------------------------------------------


async def test_failing_setup_makes_run_raise_handler_error_naming_the_node() -> None:
    handled: list[Any] = []

    class NeedsDatabase(BaseHandler):
        async def setup(self) -> None:
            raise ConnectionRefusedError("no database")

        async def handle(self, data: Any) -> Any:
            handled.append(data)
            return data

    producers, consumers, _ = pipeline(NeedsDatabase(), [1, 2])
    with pytest.raises(HandlerError, match="'node'.*setup") as info:
        await run_pipeline(producers, consumers, timeout=10)
    assert info.value.node == "node"
    assert handled == []


async def test_failing_setup_makes_async_with_raise_handler_error() -> None:
    class NeedsDatabase(BaseHandler):
        def setup(self) -> None:
            raise ConnectionRefusedError("no database")

    ingest = HandlerNode("ingest")
    node = HandlerNode("node", NeedsDatabase(), [ingest])
    async with asyncio.timeout(10):
        with pytest.raises(HandlerError, match="'node'"):
            async with PipelineExecutor([ingest], [node]):
                pass


async def test_a_source_can_reject_input_and_go_on() -> None:
    async def lines() -> Any:
        for number, line in enumerate(["1", "x", "3", "y"], start=1):
            if not line.isdigit():
                reject(line, f"not a number at line {number}", index=number)
                continue
            yield int(line)

    sink = CollectingSink()
    source = HandlerNode("lines", lines)
    out = HandlerNode("sink", sink, [source])
    executor = await run_pipeline([source], [out], timeout=10)

    assert sink.items == [1, 3]
    assert [(d.node, d.error_message, d.payload, d.index) for d in executor.dead_letters] == [
        ("lines", "not a number at line 2", "x", 2),
        ("lines", "not a number at line 4", "y", 4),
    ]
    assert executor.metrics()["lines"].dead_letters == 2


async def test_the_dead_letter_sink_is_opened_before_the_run_and_closed_after() -> None:
    class LifecycleSink:
        def __init__(self) -> None:
            self.events: list[str] = []

        async def open(self) -> None:
            self.events.append("open")

        async def write(self, letter: DeadLetter) -> None:
            self.events.append(f"write {letter.payload}")

        async def aclose(self) -> None:
            self.events.append("aclose")

    def fail(message: Any) -> Any:
        raise ValueError("boom")

    sink = LifecycleSink()
    source = HandlerNode("source", [1])
    node = HandlerNode("fail", fail, [source])
    await run_pipeline([source], [node], dead_letter_sink=sink, timeout=10)

    assert sink.events == ["open", "write 1", "aclose"]


async def test_a_source_rejection_is_dead_lettered_while_the_source_still_waits() -> None:
    written = asyncio.Event()

    class SignallingSink:
        def __init__(self) -> None:
            self.letters: list[DeadLetter] = []

        async def write(self, letter: DeadLetter) -> None:
            self.letters.append(letter)
            written.set()

    async def trigger() -> AsyncIterator[int]:
        reject("bad event", "unparseable")
        await written.wait()  # would wait forever if the letter waited for the next item
        yield 1

    sink = CollectingSink()
    letters = SignallingSink()
    source = HandlerNode("trigger", trigger)
    out = HandlerNode("sink", sink, [source])
    await run_pipeline([source], [out], dead_letter_sink=letters, timeout=10)

    assert sink.items == [1]
    assert [(d.node, d.payload, d.error_message) for d in letters.letters] == [
        ("trigger", "bad event", "unparseable")
    ]


async def test_source_rejections_being_written_when_the_source_ends_are_not_lost() -> None:
    writing = asyncio.Event()  # the background writer has taken both letters
    source_ended = asyncio.Event()

    class SlowSink:
        def __init__(self) -> None:
            self.letters: list[DeadLetter] = []

        async def write(self, letter: DeadLetter) -> None:
            writing.set()
            await source_ended.wait()  # still writing when the source's end is handled
            self.letters.append(letter)

    async def trigger() -> AsyncIterator[int]:
        reject("a", "bad a")
        reject("b", "bad b")
        await writing.wait()
        yield 1
        source_ended.set()

    letters = SlowSink()
    source = HandlerNode("trigger", trigger)
    out = HandlerNode("sink", CollectingSink(), [source])
    await run_pipeline([source], [out], dead_letter_sink=letters, timeout=10)

    assert [d.payload for d in letters.letters] == ["a", "b"]


# -- a handler's exception is a handler error, whatever its type ----------------------------


@pytest.mark.parametrize("error", [PipelineClosed, ChannelClosed])
async def test_a_handler_raising_a_closed_error_is_retried_and_dead_lettered(
    error: type[Exception],
) -> None:
    # e.g. a handler forwarding with another pipeline's submit() after that one stopped
    def forward(message: int) -> int:
        raise error("the other pipeline is not accepting input")

    run = await run_handler(forward, [1, 2], retries=1, backoff=0)

    assert [(d.error_type, d.payload, d.attempts) for d in run.dead_letters] == [
        (error.__name__, 1, 2),
        (error.__name__, 2, 2),
    ]
    assert run.metrics["handler"].errors == 4
    assert run.metrics["handler"].retries == 2


async def test_a_generator_handler_raising_pipeline_closed_is_dead_lettered() -> None:
    def expand(message: int) -> Any:
        yield message
        raise PipelineClosed("gone")

    sink = CollectingSink()
    source = HandlerNode("source", [1, 2])
    node = HandlerNode("expand", expand, [source], workers=2)
    out = HandlerNode("sink", sink, [node])
    executor = await run_pipeline([source], [node, out], timeout=TIMEOUT)

    assert sorted(sink.items) == [1, 2]
    assert [d.error_type for d in executor.dead_letters] == ["PipelineClosed"] * 2


async def test_a_source_raising_channel_closed_is_dead_lettered_and_the_run_ends() -> None:
    async def source() -> AsyncIterator[int]:
        yield 1
        raise ChannelClosed("upstream queue closed")

    sink = CollectingSink()
    executor = await run_pipeline(
        [src := HandlerNode("source", source)], [HandlerNode("sink", sink, [src])]
    )

    assert sink.items == [1]
    assert [d.error_type for d in executor.dead_letters] == ["ChannelClosed"]


# -- a source's close ------------------------------------------------------------------------


async def endless_with_close(close: str) -> AsyncIterator[int]:
    i = 0
    try:
        while True:
            yield i
            i += 1
    finally:
        if close == "hang":
            await asyncio.Event().wait()
        elif close == "fail":
            raise RuntimeError("could not release the cursor")


@pytest.mark.parametrize("close", ["hang", "fail"])
async def test_a_source_whose_close_hangs_or_fails_still_stops_gracefully(
    close: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_source, "_CLOSE_TIMEOUT", 0.05)
    sink = CollectingSink()
    source = HandlerNode("source", lambda: endless_with_close(close))
    executor = PipelineExecutor([source], [HandlerNode("sink", sink, [source])])
    run = asyncio.create_task(executor.run())
    await asyncio.wait_for(sink.wait_for(3), TIMEOUT)

    executor.stop()
    await asyncio.wait_for(run, TIMEOUT)  # no exception: the stop stayed graceful

    metrics = executor.metrics()
    assert metrics["source"].emitted == metrics["sink"].committed
    [letter] = executor.dead_letters
    assert letter.node == "source"
    if close == "hang":
        assert letter.error_message == "source did not close within 0.05 s"
    else:
        assert letter.error_type == "RuntimeError"
        assert "could not release the cursor" in letter.error_message


# -- reject() in finish() --------------------------------------------------------------------


class PairUp(BaseHandler):
    """Pairs messages; what is left unpaired at the end is rejected by finish()."""

    def __init__(self) -> None:
        self.waiting: list[int] = []

    def handle(self, message: int) -> tuple[int, int] | None:
        self.waiting.append(message)
        if len(self.waiting) == 2:
            first, second = self.waiting
            self.waiting = []
            return first, second
        return None

    def finish(self) -> str:
        for left in self.waiting:
            reject(left, "no partner")
        return "done"


@pytest.mark.parametrize("workers", [1, 2])
async def test_reject_in_finish_is_a_dead_letter_of_the_node(workers: int) -> None:
    run = await run_handler(PairUp(), [1, 2, 3], workers=workers)

    assert run.outputs == [(1, 2), "done"]
    assert [(d.node, d.error_type, d.payload, d.error_message) for d in run.dead_letters] == [
        ("handler", "Rejected", 3, "no partner")
    ]


# -- parallel chunks under abort ---------------------------------------------------------------


async def test_chunks_failing_as_an_abort_cancels_them_leave_no_unretrieved_exception() -> None:
    running: list[str] = []
    both_running = asyncio.Event()

    async def chunk_handler(chunk: list[str]) -> list[str]:
        running.extend(chunk)
        if len(running) == 2:
            both_running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise Unlucky("cleanup failed") from None  # fails while being cancelled
        return chunk  # pragma: no cover

    unhandled: list[str] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: unhandled.append(context["message"]))
    try:
        ingest = HandlerNode("ingest")
        node = HandlerNode("chunks", chunk_handler, [ingest], parallel=True, chunks=2)
        executor = PipelineExecutor([ingest], [node])
        run = asyncio.create_task(executor.run())
        await executor.wait_started()
        await executor.submit("ingest", ["a", "b"])
        await asyncio.wait_for(both_running.wait(), TIMEOUT)
        executor.abort()
        aborted = False
        try:
            await asyncio.wait_for(run, TIMEOUT)
        except PipelineAborted:
            aborted = True
        assert aborted
        del run, executor  # they hold the error, whose traceback holds the chunk tasks
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert unhandled == []


@pytest.mark.parametrize(
    ("where", "name"),
    [
        ("asyncpipe", "EndOfStream"),
        ("asyncpipe._channel", "EndOfStream"),
        ("asyncpipe.connectors._columns", "ConversionError"),
        ("asyncpipe.connectors._sqlite_db", "RecordsRefused"),
    ],
)
def test_every_error_is_one_class_of_the_errors_module_under_asyncpipe_error(
    where: str, name: str
) -> None:
    error = getattr(importlib.import_module(where), name)

    assert error is getattr(_errors, name)
    assert issubclass(error, AsyncpipeError)


def test_a_conversion_error_is_still_a_value_error_naming_its_column() -> None:
    error = _errors.ConversionError("amount", "x", float, ValueError("bad"))

    assert isinstance(error, ValueError)
    assert error.column == "amount"
    assert str(error) == "column 'amount': cannot convert 'x' with float: bad"
