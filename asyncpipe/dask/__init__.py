"""Running handlers on a Dask cluster (the ``dask`` extra: ``pip install 'asyncpipe[dask]'``).

A node runs its handler on a Dask cluster's workers when given a Dask ``Client``, or a
:class:`DaskExecutor` built from a scheduler address, as ``executor=``::

    HandlerNode("score", Model(), [ingest], executor=DaskExecutor("tcp://10.0.0.5:8786"))

instead of ``cpu=True`` (the pipeline's own process pool). The handler is set up once per
Dask worker (a worker plugin), torn down when the run ends; a worker that dies has its
calls run again elsewhere, a message that keeps killing workers is dead-lettered as
:class:`asyncpipe.WorkerCrashed`, and a scheduler that goes away fails the calls with
:class:`SchedulerUnavailable` (the node's error policy decides). See ``docs/dask.md``.
"""

from importlib.util import find_spec as _find_spec

if _find_spec("distributed") is None:
    raise ImportError(
        "asyncpipe.dask needs the dask extra: pip install 'asyncpipe[dask]'"
    ) from ModuleNotFoundError("No module named 'distributed'", name="distributed")

from .._exports import claim_module as _claim_module
from ._executor import DaskExecutor, SchedulerUnavailable

__all__ = ["DaskExecutor", "SchedulerUnavailable"]

_claim_module(globals(), __all__, __name__)
