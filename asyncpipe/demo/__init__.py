"""The shipped demo: the original's bank pipeline (``python -m asyncpipe.demo``)."""

from importlib.util import find_spec as _find_spec

# Looked up, not imported: scikit-learn alone takes seconds to import, and worker processes
# import this package to unpickle the risk model.
for _name in ("faker", "grpc", "rich", "sklearn"):
    if _find_spec(_name) is None:
        raise ImportError(
            "asyncpipe.demo needs the demo extra: pip install 'asyncpipe[demo]'"
        ) from ModuleNotFoundError(f"No module named {_name!r}", name=_name)
