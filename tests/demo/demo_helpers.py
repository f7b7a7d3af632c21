"""Helpers for the demo tests: a small scale, a runner, a model that counts its loads."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import Any

import watchfiles

from asyncpipe import PipelineExecutor
from asyncpipe.demo._data import Scale, generate
from asyncpipe.demo._model import RiskModel, train
from asyncpipe.demo._pipeline import DemoConfig, build_pipeline, reset_outputs, unfed

TIMEOUT = 40.0
AS_OF = "2026-11-01"
SMALL = Scale(seed=7, clients=300, transactions=2000, new=800, as_of=AS_OF)

_models: dict[int, bytes] = {}


def model_for(scale: Scale) -> bytes:
    if scale.seed not in _models:
        _models[scale.seed] = train(scale.seed)
    return _models[scale.seed]


def config_for(workdir: Path, scale: Scale = SMALL, **options: Any) -> DemoConfig:
    generate(workdir, scale)
    return DemoConfig(workdir=workdir, scale=scale, timer_interval=0.05, **options)


async def run_demo(config: DemoConfig, **options: Any) -> PipelineExecutor:
    """One run-to-completion of the demo pipeline, as ``python -m asyncpipe.demo`` does."""
    reset_outputs(config)
    executor = build_pipeline(config, model_for(config.scale), **options)
    async with asyncio.timeout(TIMEOUT):
        await executor.run()
    return executor


async def fed_to_the_end(config: DemoConfig) -> None:
    """Wait until the server has fed every input of the work directory to the end (the
    timer fires for a second after each start; a stop before that leaves it to the next)."""
    if not unfed(config):
        return
    try:
        async with asyncio.timeout(30):
            # Woken by the server's writes to out/ (markers, manifests); the 1 s timeout
            # covers a write made before the watch began.
            async for _ in watchfiles.awatch(config.out, rust_timeout=1000, yield_on_timeout=True):
                if not unfed(config):
                    return
    except TimeoutError:
        pass
    raise AssertionError(f"inputs not fed to the end: {unfed(config)}")


def dump(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every table's rows, sorted; dead letters without their id, time and position in
    their batch (which depends on the arrival order), and with the work directory's path
    replaced by ``<workdir>``."""
    workdir = str(db.parent.parent)
    conn = sqlite3.connect(db)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        out = {}
        for table in sorted(tables):
            if table == "dead_letters":
                sql = "SELECT node, error_type, error_message, payload FROM dead_letters"
            else:
                sql = f"SELECT * FROM {table}"
            rows = [
                tuple(v.replace(workdir, "<workdir>") if isinstance(v, str) else v for v in row)
                for row in conn.execute(sql)
            ]
            out[table] = sorted(rows, key=repr)
        return out
    finally:
        conn.close()


class CountingRiskModel(RiskModel):
    """The risk model, noting each load (process id) in ``log``."""

    def __init__(self, model: bytes, log: str) -> None:
        super().__init__(model)
        self.log = log

    async def setup(self) -> None:
        await super().setup()
        with open(self.log, "a") as file:  # noqa: ASYNC230 - one short line, in a worker
            file.write(f"{os.getpid()}\n")
