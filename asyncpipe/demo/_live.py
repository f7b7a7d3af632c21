"""The demo's live table: per-node counters while the pipeline runs.

Nodes pass messages (a batch of rows from a file or a query, one row from the timer), so
"in", "out" and the queue count messages; what a sink committed is also shown in rows, read
from the results table it writes, with the overall rows settled per second in the title.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from .._executor import PipelineExecutor
from .._metrics import PipelineMetrics
from ._summary import STORED

__all__ = ["LiveView", "live_table"]

_CAPTION = (
    "msgs: messages (a batch of rows each); a sink's out: messages committed, rows: rows "
    "in its results table; dead: rows dead-lettered; queue: messages waiting/capacity; "
    "p50: ms per message"
)


def stored_rows(database: Path) -> dict[str, int]:
    """Rows per results table, read-only; a table not there yet (or busy) is left out."""
    counts: dict[str, int] = {}
    if not database.exists():
        return counts
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=0.05)
    try:
        for table in (*STORED.values(), "dead_letters"):
            with contextlib.suppress(sqlite3.OperationalError):
                counts[table] = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()
    return counts


def live_table(metrics: PipelineMetrics, rows: dict[str, int]) -> Table:
    """The table for one snapshot; ``rows``: rows per results table (see stored_rows)."""
    stored = sum(rows.get(table, 0) for table in STORED.values())
    dead = rows.get("dead_letters", 0)
    rate = (stored + dead) / metrics.uptime if metrics.uptime > 0 else 0.0
    table = Table(
        title=f"pipeline {metrics.state}, {metrics.uptime:.1f}s: {stored:,} rows stored, "
        f"{dead:,} dead letters ({rate:,.0f} rows/s)",
        title_justify="left",
        caption=_CAPTION,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for column in ("node", "msgs in", "msgs out", "rows", "dead", "queue", "p50 ms"):
        table.add_column(column, justify="left" if column == "node" else "right", no_wrap=True)
    for name, node in metrics.nodes.items():
        sink = name in STORED
        table.add_row(
            name,
            f"{node.received:,}",
            f"{node.committed if sink else node.emitted:,}",
            f"{rows.get(STORED[name], 0):,}" if sink else "",
            f"{node.dead_letters:,}" if node.dead_letters else "",
            f"{node.queue_depth}/{node.queue_capacity}" if node.queue_capacity else "",
            f"{node.latency_p50 * 1000:.2f}" if node.latency_p50 is not None else "",
        )
    return table


class LiveView:
    """Refreshes the table while the pipeline runs; on a terminal only.

    Piped output gets the final table once, on lines of its own: a live display there
    would leave its last frame glued to what is printed next.
    """

    def __init__(self, executor: PipelineExecutor, database: Path, console: Console) -> None:
        self.executor = executor
        self.database = database
        self.console = console
        self.rows: dict[str, int] = {}

    def table(self) -> Table:
        return live_table(self.executor.metrics(), self.rows)

    async def _poll(self) -> None:
        self.rows = await asyncio.to_thread(stored_rows, self.database)

    @contextlib.asynccontextmanager
    async def running(self, *, interval: float = 0.5) -> AsyncIterator[None]:
        if not self.console.is_terminal:
            try:
                yield
            finally:
                await self._poll()
                self.console.print(self.table())
                self.console.print()
            return
        with Live(self.table(), console=self.console, auto_refresh=False) as live:

            async def refresh() -> None:
                while True:
                    await asyncio.sleep(interval)
                    await self._poll()
                    live.update(self.table(), refresh=True)

            # Owned here: cancelled and awaited before the final frame, whatever the
            # pipeline's outcome (a TaskGroup would wrap that outcome in a group).
            refresher = asyncio.create_task(refresh(), name="demo-live-table")
            try:
                yield
            finally:
                refresher.cancel()
                await asyncio.wait([refresher])
            await self._poll()
            live.update(self.table(), refresh=True)
        self.console.print()
