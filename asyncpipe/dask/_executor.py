"""The ``executor=`` that sends a node's handler to a Dask cluster."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distributed import Client

from .._errors import AsyncpipeError

if TYPE_CHECKING:
    from .._offload import Pool

__all__ = ["DaskExecutor", "SchedulerUnavailable"]


class SchedulerUnavailable(AsyncpipeError, ConnectionError):
    """The Dask scheduler cannot be reached: at the start of a run (the run fails), or
    while it runs (each call fails, and its node's error policy decides)."""


class DaskExecutor:
    """Runs offloaded handlers on the Dask cluster behind ``scheduler``.

    Give it as a node's (or the pipeline's) ``executor=``; a Dask ``Client`` given there
    directly is wrapped in one with the defaults.

    Args:
        scheduler: the scheduler's address (``"tcp://host:8786"``), a ``Client`` (its
            scheduler is used with its security settings; an asynchronous client on the
            pipeline's event loop is used as it is), or a cluster object with a
            ``scheduler_address`` (e.g. ``distributed.LocalCluster``).
        crash_retries: times a message is sent again, one suspect at a time, after Dask
            gave up on it with ``KilledWorker`` (its workers died; Dask itself reruns a task
            up to ``distributed.scheduler.allowed-failures`` times first). Then it is
            dead-lettered as :class:`asyncpipe.WorkerCrashed`.
        connect_timeout: seconds to reach the scheduler when the run starts.
        teardown_timeout: seconds the end of a run waits for the handlers' ``teardown()``
            on the workers (best effort: a worker that died tears nothing down).

    Each run connects its own asynchronous client on the pipeline's event loop (unless
    given one there) and closes it at the end; the cluster is never shut down.
    """

    def __init__(
        self,
        scheduler: str | Client | Any,
        *,
        crash_retries: int = 1,
        connect_timeout: float = 10.0,
        teardown_timeout: float = 30.0,
    ) -> None:
        if crash_retries < 0 or connect_timeout <= 0 or teardown_timeout < 0:
            raise ValueError("crash_retries and teardown_timeout must be >= 0, connect_timeout > 0")
        self.client: Client | None = scheduler if isinstance(scheduler, Client) else None
        self.security: Any = None
        address: Any = None
        if self.client is not None:
            address = getattr(self.client.scheduler, "address", None)
            self.security = self.client.security
        elif isinstance(scheduler, str):
            address = scheduler
        else:
            address = getattr(scheduler, "scheduler_address", None)
            self.security = getattr(scheduler, "security", None)
        if not isinstance(address, str):
            raise TypeError(
                "DaskExecutor takes a scheduler address, a distributed.Client or a cluster "
                f"with a scheduler_address, not {type(scheduler).__name__}"
            )
        self.address: str = address
        self.crash_retries = crash_retries
        self.connect_timeout = connect_timeout
        self.teardown_timeout = teardown_timeout

    def __repr__(self) -> str:
        return f"<DaskExecutor {self.address}>"

    def make_pool(self, *, max_workers: int) -> Pool:
        """The pool of one run (``max_workers``: its size until the cluster says)."""
        from ._pool import DaskPool

        return DaskPool(self, max_workers=max_workers)
