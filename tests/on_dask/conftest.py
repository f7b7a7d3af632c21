"""A real Dask cluster for the tests here: a ``LocalCluster`` of two worker processes (one
thread each) on 127.0.0.1, started once per session (it takes seconds) and closed at the
end. Its scheduler gives up on a task at the first death of its worker
(``allowed_failures=0``), so a poisonous message costs two worker restarts, not eight, and
asyncpipe's own retry of a ``KilledWorker`` is what reruns the messages of a killed worker.

The handlers are in ``tests/workers.py``: the workers import them by reference (they are
spawned with the session's ``sys.path``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from distributed import Client, LocalCluster

#: Seconds to wait for the cluster's two workers (one may be restarting after a test
#: killed it).
WORKERS_TIMEOUT = 60


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[LocalCluster]:
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"allowed_failures": 0},
    ) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def session_client(dask_cluster: LocalCluster) -> Iterator[Client]:
    with Client(dask_cluster, set_as_default=False) as client:
        yield client


@pytest.fixture
def dask_client(session_client: Client) -> Client:
    """A synchronous client of the session's cluster, once both its workers are up (for
    the tests' own look at the workers; the pipelines connect their own)."""
    session_client.wait_for_workers(2, timeout=WORKERS_TIMEOUT)
    return session_client
