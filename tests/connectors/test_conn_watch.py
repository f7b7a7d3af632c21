"""RequestTrigger: each new file of a watched directory is fed once, also across restarts."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from conn_helpers import TIMEOUT, collect, flatten

from asyncpipe import HandlerNode, PipelineAborted, PipelineExecutor
from asyncpipe.connectors import CsvSource, RequestTrigger
from asyncpipe.testing import CollectingSink


def drop(directory: Path, name: str, text: str) -> Path:
    """Write a file the recommended way: under a name that does not match, then rename."""
    temp = directory / f".{name}.tmp"
    temp.write_text(text)
    return temp.rename(directory / name)


@asynccontextmanager
async def watching(trigger: RequestTrigger) -> AsyncIterator[tuple[CollectingSink, Any]]:
    """Run ``trigger -> CollectingSink`` in the background; stop it on leaving."""
    sink = CollectingSink()
    source = HandlerNode("inbox", trigger)
    out = HandlerNode("sink", sink, [source])
    async with asyncio.timeout(TIMEOUT):
        async with PipelineExecutor([source], [out]) as executor:
            yield sink, executor
            executor.stop()


def reader(path: Path) -> CsvSource:
    return CsvSource(path, batch_size=100)


async def test_files_present_and_arriving_are_each_fed_once(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    drop(inbox, "a.csv", "x\n")
    (inbox / "notes.txt").write_text("not matching")
    (inbox / ".hidden.csv").write_text("hidden")
    async with watching(RequestTrigger(None, ".csv", inbox, settle=0)) as (sink, _):
        await sink.wait_for(1)
        drop(inbox, "b.csv", "x\n")
        await sink.wait_for(2)
        with (inbox / "b.csv").open("a") as file:  # a fed file changing is not fed again
            file.write("y\n")
        drop(inbox, "c.csv", "x\n")
        await sink.wait_for(3)
    assert sink.items == [inbox / "a.csv", inbox / "b.csv", inbox / "c.csv"]


async def test_the_handler_reads_each_file_and_its_bad_lines_are_dead_letters(
    tmp_path: Path,
) -> None:
    drop(tmp_path, "s1.csv", "cpf,score\n1,700\n2,650,extra\n")
    trigger = RequestTrigger(reader, ".csv", tmp_path, settle=0)
    async with watching(trigger) as (sink, executor):
        await sink.wait_for(1)
        drop(tmp_path, "s2.csv", "cpf,score\n3,800\n")
        await sink.wait_for(2)
    assert flatten(sink.items) == [{"cpf": "1", "score": "700"}, {"cpf": "3", "score": "800"}]
    assert [d.error_message for d in executor.dead_letters] == [
        f"{tmp_path / 's1.csv'}:3: expected 2 fields, got 3"
    ]


async def test_a_restart_does_not_feed_files_again(tmp_path: Path) -> None:
    drop(tmp_path, "a.csv", "n\n1\n")
    drop(tmp_path, "b.csv", "n\n2\n")
    async with watching(RequestTrigger(reader, ".csv", tmp_path, settle=0)) as (sink, _):
        await sink.wait_for(2)
    first_run = flatten(sink.items)
    drop(tmp_path, "c.csv", "n\n3\n")
    async with watching(RequestTrigger(reader, ".csv", tmp_path, settle=0)) as (sink, _):
        await sink.wait_for(1)
    assert sorted(r["n"] for r in first_run) == ["1", "2"]
    assert flatten(sink.items) == [{"n": "3"}]
    manifest = tmp_path / ".asyncpipe-manifest-csv.jsonl"
    entries = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert sorted((e["file"], e["status"]) for e in entries) == [
        ("a.csv", "done"),
        ("b.csv", "done"),
        ("c.csv", "done"),
    ]


async def test_a_file_being_written_in_place_is_read_only_once_complete(tmp_path: Path) -> None:
    path = tmp_path / "slow.csv"
    lines = ["n\n"] + [f"{i}\n" for i in range(8)]
    trigger = RequestTrigger(reader, ".csv", tmp_path, settle=0.5)
    async with watching(trigger) as (sink, _):
        with path.open("w") as file:
            for line in lines:  # a slow writer: pauses far shorter than `settle`
                file.write(line)
                file.flush()
                await asyncio.sleep(0.04)
        await sink.wait_for(1)
    assert flatten(sink.items) == [{"n": str(i)} for i in range(8)]


async def test_a_renamed_file_is_read_whole_at_once(tmp_path: Path) -> None:
    temp = tmp_path / "big.csv.part"
    trigger = RequestTrigger(reader, ".csv", tmp_path, settle=0)
    async with watching(trigger) as (sink, _):
        with temp.open("w") as file:
            file.write("n\n")
            for i in range(1000):
                file.write(f"{i}\n")
                if i % 250 == 0:
                    file.flush()
                    await asyncio.sleep(0)  # let the watcher see the partial .part file
        temp.rename(tmp_path / "big.csv")
        await sink.wait_for(10)
    assert len(flatten(sink.items)) == 1000


async def test_the_directory_can_disappear_and_come_back(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    # The manifest lives outside the inbox: rmtree below must not race its append.
    manifest = tmp_path / "manifest.jsonl"
    trigger = RequestTrigger(None, ".csv", inbox, poll_interval=0.2, settle=0, manifest=manifest)
    async with watching(trigger) as (sink, _):
        inbox.mkdir()  # missing at the start
        drop(inbox, "a.csv", "x\n")
        await sink.wait_for(1)
        shutil.rmtree(inbox)
        inbox.mkdir()
        drop(inbox, "b.csv", "x\n")
        await sink.wait_for(2)
    assert sink.items == [inbox / "a.csv", inbox / "b.csv"]


async def test_a_failing_handler_dead_letters_the_file_once(tmp_path: Path) -> None:
    def fussy(path: Path) -> str:
        if path.name == "bad.csv":
            raise ValueError(f"cannot read {path.name}")
        return path.name

    drop(tmp_path, "bad.csv", "x\n")
    async with watching(RequestTrigger(fussy, ".csv", tmp_path, settle=0)) as (sink, executor):
        drop(tmp_path, "good.csv", "x\n")
        await sink.wait_for(1)
    assert sink.items == ["good.csv"]
    [letter] = executor.dead_letters
    assert letter.error_message == f"{tmp_path / 'bad.csv'}: ValueError: cannot read bad.csv"
    # Recorded as failed: a restart does not try it again.
    names, executor = await collect(RequestTrigger(fussy, ".csv", tmp_path, 0.01, 2, settle=0))
    assert names == [] and executor.dead_letters == []


async def test_polling_and_max_checks_end_the_source(tmp_path: Path) -> None:
    drop(tmp_path, "a.csv", "x\n")
    trigger = RequestTrigger(None, ".csv", tmp_path, 0.02, 3, settle=0, force_polling=True)
    loop = asyncio.get_running_loop()
    started = loop.time()
    paths, _ = await collect(trigger)
    assert paths == [tmp_path / "a.csv"]
    assert loop.time() - started >= 3 * 0.02


async def test_a_damaged_manifest_line_is_ignored(tmp_path: Path) -> None:
    drop(tmp_path, "a.csv", "x\n")
    drop(tmp_path, "b.csv", "x\n")
    manifest = tmp_path / "fed.jsonl"
    manifest.write_text('{"file": "a.csv", "status": "done"}\n{"file": "b.c')
    trigger = RequestTrigger(None, ".csv", tmp_path, 0.01, 1, settle=0, manifest=manifest)
    paths, _ = await collect(trigger)
    assert paths == [tmp_path / "b.csv"]


class GatedSink:
    """A sink that takes each message, then holds it until ``gate`` is set."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.gate = asyncio.Event()
        self.committed: list[Any] = []

    async def __call__(self, message: Any) -> None:
        self.arrived.set()
        await self.gate.wait()
        self.committed.append(message)


def manifest_names(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["file"] for line in path.read_text().splitlines()]


async def test_a_file_is_recorded_only_once_its_rows_are_committed(tmp_path: Path) -> None:
    drop(tmp_path, "a.csv", "n\n1\n2\n")
    manifest = tmp_path / ".asyncpipe-manifest-csv.jsonl"
    sink = GatedSink()
    source = HandlerNode("inbox", RequestTrigger(reader, ".csv", tmp_path, settle=0))
    executor = PipelineExecutor([source], [HandlerNode("sink", sink, [source])])
    async with asyncio.timeout(TIMEOUT):
        with pytest.raises(PipelineAborted):
            async with executor:
                await sink.arrived.wait()
                # Handed to the pipeline, not committed: a crash now must feed it again.
                assert manifest_names(manifest) == []
                executor.abort()
        assert manifest_names(manifest) == [] and sink.committed == []

        # The next run feeds it again; a graceful stop waits for the commit, then records.
        sink = GatedSink()
        source = HandlerNode("inbox", RequestTrigger(reader, ".csv", tmp_path, settle=0))
        async with PipelineExecutor([source], [HandlerNode("sink", sink, [source])]) as again:
            await sink.arrived.wait()
            again.stop()
            assert manifest_names(manifest) == []
            sink.gate.set()
    assert flatten(sink.committed) == [{"n": "1"}, {"n": "2"}]
    assert manifest_names(manifest) == ["a.csv"]
