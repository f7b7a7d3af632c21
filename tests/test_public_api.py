"""The public API: every public module's ``__all__`` sorted, importable, documented, and
reporting the public module as the home of what it defines."""

from __future__ import annotations

import importlib
import inspect
from types import ModuleType
from typing import Any

import pytest

import asyncpipe

PUBLIC_MODULES = [
    "asyncpipe",
    "asyncpipe.connectors",
    "asyncpipe.ingest",
    "asyncpipe.metrics",
    "asyncpipe.state",
    "asyncpipe.testing",
]


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


def exported(module_name: str) -> list[tuple[str, str]]:
    """(module, name) for every name in the module's ``__all__``."""
    module = importlib.import_module(module_name)
    return [(module_name, name) for name in module.__all__]


def exported_classes_and_functions(module_name: str) -> list[tuple[str, str]]:
    module = importlib.import_module(module_name)
    return [
        (module_name, name)
        for name in module.__all__
        if is_asyncpipe_class_or_function(getattr(module, name, None))
    ]


EXPORTED = [pair for name in PUBLIC_MODULES for pair in exported(name)]
EXPORTED_CLASSES_AND_FUNCTIONS = [
    pair for name in PUBLIC_MODULES for pair in exported_classes_and_functions(name)
]


def public_module(name: str) -> ModuleType:
    return importlib.import_module(name)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_is_sorted(name: str) -> None:
    names = public_module(name).__all__
    assert names == sorted(names, key=isort_style_key)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_all_has_no_duplicates(name: str) -> None:
    names = public_module(name).__all__
    assert len(names) == len(set(names))


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_the_module_is_documented(name: str) -> None:
    assert inspect.getdoc(public_module(name))


@pytest.mark.parametrize(("module", "name"), EXPORTED)
def test_every_name_in_all_is_importable(module: str, name: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"from {module} import {name}", namespace)
    assert namespace[name] is getattr(public_module(module), name)


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_public_class_and_function_is_in_all(name: str) -> None:
    module = public_module(name)
    public = {
        attribute
        for attribute, obj in vars(module).items()
        if not attribute.startswith("_")
        and is_asyncpipe_class_or_function(obj)
        and obj.__module__ not in set(PUBLIC_MODULES) - {name}  # not another's re-export
    }
    assert public - set(module.__all__) == set()


@pytest.mark.parametrize(("module", "name"), EXPORTED_CLASSES_AND_FUNCTIONS)
def test_exported_member_is_documented(module: str, name: str) -> None:
    assert inspect.getdoc(getattr(public_module(module), name))


@pytest.mark.parametrize(("module", "name"), EXPORTED_CLASSES_AND_FUNCTIONS)
def test_exported_member_reports_its_public_module(module: str, name: str) -> None:
    # ``module`` itself, or another public module it re-exports from; never a private one.
    assert getattr(public_module(module), name).__module__ in PUBLIC_MODULES


def test_the_core_names_are_exported() -> None:
    for name in ("BaseHandler", "HandlerNode", "PipelineExecutor", "reject", "Receipt"):
        assert name in asyncpipe.__all__


@pytest.mark.parametrize(("module", "name"), EXPORTED)
def test_every_exported_error_derives_from_asyncpipe_error(module: str, name: str) -> None:
    obj = getattr(public_module(module), name)
    if inspect.isclass(obj) and issubclass(obj, BaseException):
        assert issubclass(obj, asyncpipe.AsyncpipeError)
