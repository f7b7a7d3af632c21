"""Packaging: the core installs light, the extras hold the rest, one version, and only the
library is packaged (``loadtest`` and ``bench`` run from the repository)."""

from __future__ import annotations

import fnmatch
import importlib.metadata
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import asyncpipe

ROOT = Path(__file__).resolve().parents[1]
GRPC = {"grpcio", "grpcio-health-checking", "grpcio-reflection", "protobuf"}
HEAVY = GRPC | {"faker", "matplotlib", "rich", "scikit-learn", "scipy"}


def installed() -> importlib.metadata.Distribution:
    """asyncpipe's installed metadata: not a build's leftover ``asyncpipe.egg-info`` in the
    repository, which is on ``sys.path`` too (pyproject's pytest ``pythonpath``)."""
    path = [p for p in sys.path if Path(p or ".").resolve() != ROOT]
    return next(iter(importlib.metadata.distributions(name="asyncpipe", path=path)))


def requirements(extra: str | None) -> dict[str, Requirement]:
    """The installed metadata's requirements of the core (``None``) or of one extra only."""
    found = {}
    for line in installed().requires or []:
        requirement = Requirement(line)
        marker = requirement.marker
        if (marker is not None and "extra" in str(marker)) != (extra is not None):
            continue  # the core's when an extra's are wanted, or the other way round
        if marker is None or marker.evaluate({"extra": extra or ""}):
            found[requirement.name.lower()] = requirement
    return found


def test_the_core_requires_none_of_the_heavy_packages() -> None:
    core = set(requirements(None))
    assert core <= {"aiofiles", "aiosqlite", "uvloop", "watchfiles"}
    assert not core & HEAVY


def test_the_grpc_extra_holds_the_ingestion_service() -> None:
    assert set(requirements("grpc")) == GRPC


def test_the_metrics_extra_holds_prometheus_client() -> None:
    assert set(requirements("metrics")) == {"prometheus-client"}


def test_the_demo_extra_holds_grpc_metrics_and_the_demos_own_packages() -> None:
    demo = requirements("demo")
    assert demo["asyncpipe"].extras == {"grpc", "metrics"}
    assert {"faker", "matplotlib", "rich", "scikit-learn"} <= set(demo)


def test_the_test_extra_includes_the_demo_postgres_dask_and_bench_extras() -> None:
    assert requirements("test")["asyncpipe"].extras == {"bench", "dask", "demo", "postgres"}


def test_the_bench_extra_holds_bytewax_0_21() -> None:
    bytewax = requirements("bench")["bytewax"]
    assert bytewax.specifier.contains("0.21.1") and not bytewax.specifier.contains("0.22.0")


def test_the_dask_extra_holds_distributed() -> None:
    assert set(requirements("dask")) == {"distributed"}


def test_the_version_is_written_once() -> None:
    assert installed().version == asyncpipe.__version__
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]


def test_only_the_library_is_packaged() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    include = config["packages"]["find"]["include"]

    def packaged(name: str) -> bool:  # setuptools matches package names the same way
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in include)

    assert packaged("asyncpipe") and packaged("asyncpipe.connectors")
    for folder in ("bench", "bench.ingest", "loadtest", "tests", "demo", "proto"):
        assert not packaged(folder), folder


@pytest.mark.parametrize(
    ("package", "missing", "extra"),
    [
        ("asyncpipe.ingest", "grpc", "grpc"),
        ("asyncpipe.metrics", "prometheus_client", "metrics"),
        ("asyncpipe.demo", "sklearn", "demo"),
        ("asyncpipe.dask", "distributed", "dask"),
    ],
)
def test_importing_without_the_extra_names_it(package: str, missing: str, extra: str) -> None:
    # In a child: None in sys.modules makes the import (and find_spec) see no such module.
    code = f"import sys; sys.modules[{missing!r}] = None; import {package}"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last == (
        f"ImportError: {package} needs the {extra} extra: pip install 'asyncpipe[{extra}]'"
    )
