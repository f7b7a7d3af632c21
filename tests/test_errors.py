"""Failures: dead letters, retries, error policies, fail-fast, failing hooks and sinks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from asyncpipe import (
    BaseHandler,
    DeadLetter,
    DeadLetterSink,
    HandlerError,
    HandlerNode,
    PipelineExecutor,
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
        def setup(self) -> None:  # type: ignore[override]
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
