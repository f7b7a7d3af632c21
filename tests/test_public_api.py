"""The public API is ``asyncpipe.__all__``: sorted, complete, and reporting ``asyncpipe``."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import asyncpipe


def isort_style_key(name: str) -> tuple[int, str]:
    """The order ruff's RUF022 ("isort-style") keeps ``__all__`` in: SCREAMING_CASE
    constants, then CamelCase classes, then everything else, each alphabetically."""
    if name.isupper():
        group = 0
    elif name[:1].isupper():
        group = 1
    else:
        group = 2
    return group, name


def is_asyncpipe_class_or_function(obj: Any) -> bool:
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        return False
    module = getattr(obj, "__module__", "") or ""
    return module == "asyncpipe" or module.startswith("asyncpipe.")


EXPORTED_CLASSES_AND_FUNCTIONS = [
    name for name in asyncpipe.__all__ if is_asyncpipe_class_or_function(getattr(asyncpipe, name))
]


def test_all_is_sorted() -> None:
    assert asyncpipe.__all__ == sorted(asyncpipe.__all__, key=isort_style_key)


def test_all_has_no_duplicates() -> None:
    assert len(asyncpipe.__all__) == len(set(asyncpipe.__all__))


def test_every_name_in_all_exists() -> None:
    missing = [name for name in asyncpipe.__all__ if not hasattr(asyncpipe, name)]
    assert missing == []


def test_every_public_class_and_function_is_in_all() -> None:
    public = {
        name
        for name, obj in vars(asyncpipe).items()
        if not name.startswith("_") and is_asyncpipe_class_or_function(obj)
    }
    assert public - set(asyncpipe.__all__) == set()


@pytest.mark.parametrize("name", EXPORTED_CLASSES_AND_FUNCTIONS)
def test_exported_member_reports_asyncpipe_as_its_module(name: str) -> None:
    assert getattr(asyncpipe, name).__module__ == "asyncpipe"


def test_the_core_names_are_exported() -> None:
    for name in ("BaseHandler", "HandlerNode", "PipelineExecutor", "reject", "Receipt"):
        assert name in asyncpipe.__all__


def test_every_error_derives_from_asyncpipe_error() -> None:
    errors = [
        getattr(asyncpipe, name)
        for name in asyncpipe.__all__
        if inspect.isclass(getattr(asyncpipe, name))
        and issubclass(getattr(asyncpipe, name), Exception)
        and name != "EndOfStream"  # a control-flow signal of Channel.get, like StopIteration
    ]
    assert errors, "no exception classes exported"
    assert all(issubclass(error, asyncpipe.AsyncpipeError) for error in errors)
