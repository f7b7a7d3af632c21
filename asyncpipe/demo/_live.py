"""The demo's live table: per-node counters while the pipeline runs.

Nodes pass messages (a batch of rows from a file or a query, one row from the timer), so
"in", "out" and the queue count messages; what a sink committed is also shown in rows, read
from the results table it writes, with the overall rows settled per second in the title.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import AsyncIterator

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table

from .._executor import PipelineExecutor
from .._metrics import PipelineMetrics
from ..ingest import IngestServer
from ..ingest._stats import ServerMetrics
from ._database import DEAD_LETTERS, ResultsDatabase
from ._summary import ROUTING, STORED

__all__ = ["LiveView", "Rates", "grpc_line", "live_table"]

_CAPTION = (
    "msgs: messages (a batch of rows each); a sink's out: messages committed, rows: rows "
    "in its results table; dead: rows dead-lettered; queue: messages waiting/capacity; "
    "p50: ms per message"
)


class Rates:
    """Requests/s and items/s over the last ``window`` seconds of samples."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._samples: collections.deque[tuple[float, int, int]] = collections.deque()

    def update(self, now: float, requests: int, items: int) -> tuple[float, float]:
        samples = self._samples
        samples.append((now, requests, items))
        while len(samples) > 2 and now - samples[1][0] >= self.window:
            samples.popleft()
        then, requests_then, items_then = samples[0]
        if now <= then:
            return 0.0, 0.0
        return (requests - requests_then) / (now - then), (items - items_then) / (now - then)


def grpc_line(server: ServerMetrics, rates: tuple[float, float]) -> str:
    """The gRPC service's figures in one line: batches and items (with their recent rates),
    and the batches answered with an error status, by status."""
    received = sum(m.items_received for m in server.methods.values())
    errors = server.errors
    failed = ", ".join(f"{code} {count:,}" for code, count in sorted(errors.items())) or "none"
    return (
        f"gRPC: {server.requests:,} requests ({rates[0]:,.0f}/s), {received:,} items "
        f"({rates[1]:,.0f}/s); errors: {failed}"
    )


def live_table(metrics: PipelineMetrics, rows: dict[str, int], grpc: str | None = None) -> Table:
    """The table for one snapshot; ``rows``: rows per results table (see
    ``ResultsDatabase.counts``); ``grpc``: the gRPC service's line (see grpc_line),
    under the title."""
    stored = sum(rows.get(table, 0) for table in STORED.values())
    dead = rows.get("dead_letters", 0)
    rate = (stored + dead) / metrics.uptime if metrics.uptime > 0 else 0.0
    title = (
        f"pipeline {metrics.state}, {metrics.uptime:.1f}s: {stored:,} rows stored, "
        f"{dead:,} dead letters ({rate:,.0f} rows/s)"
    )
    table = Table(
        title=title if grpc is None else f"{title}\n{grpc}",
        title_justify="left",
        caption=_CAPTION,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for column in ("node", "msgs in", "msgs out", "rows", "dead", "queue", "p50 ms"):
        table.add_column(column, justify="left" if column == "node" else "right", no_wrap=True)
    for name, node in metrics.nodes.items():
        if name in ROUTING:
            continue
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

    def __init__(
        self,
        executor: PipelineExecutor,
        database: ResultsDatabase,
        console: Console,
        server: IngestServer | None = None,
    ) -> None:
        self.executor = executor
        self.database = database
        self.console = console
        self.server = server
        self.rows: dict[str, int] = {}
        self._rates = Rates()
        self._rates.update(time.monotonic(), 0, 0)  # until a window has passed: since now

    def table(self) -> Table:
        line = None
        if self.server is not None:
            served = self.server.metrics()
            received = sum(m.items_received for m in served.methods.values())
            rates = self._rates.update(time.monotonic(), served.requests, received)
            line = grpc_line(served, rates)
        return live_table(self.executor.metrics(), self.rows, line)

    async def _poll(self) -> None:
        tables = (*STORED.values(), DEAD_LETTERS)
        self.rows = await asyncio.to_thread(self.database.counts, tables)

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
