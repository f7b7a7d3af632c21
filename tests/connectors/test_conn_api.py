"""The public API of ``asyncpipe.connectors``: sorted, complete, reporting its package."""

from __future__ import annotations

import inspect

import pytest

import asyncpipe.connectors as connectors


def isort_style_key(name: str) -> tuple[int, str]:
    group = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return group, name


def test_all_is_sorted_and_complete() -> None:
    assert connectors.__all__ == sorted(connectors.__all__, key=isort_style_key)
    public = {
        name
        for name, obj in vars(connectors).items()
        if not name.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))
    }
    assert public == set(connectors.__all__) - {"DEFAULT_BATCH_SIZE"}


@pytest.mark.parametrize("name", [n for n in connectors.__all__ if n != "DEFAULT_BATCH_SIZE"])
def test_exported_names_report_the_package_and_are_documented(name: str) -> None:
    obj = getattr(connectors, name)
    assert obj.__module__ == "asyncpipe.connectors"
    assert obj.__doc__


def test_sources_and_triggers_are_async_iterables(tmp_path: object) -> None:
    for source in (
        connectors.CsvSource("x.csv"),
        connectors.TextSource("x.txt"),
        connectors.JsonLinesSource("x.jsonl"),
        connectors.SqliteSource("x.db", "SELECT 1"),
        connectors.IterableSource([]),
        connectors.TimerTrigger(None, 1.0),
        connectors.RequestTrigger(None, ".csv", "inbox"),
    ):
        assert hasattr(source, "__aiter__"), source
