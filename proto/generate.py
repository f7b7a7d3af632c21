"""Regenerate the Python code of the .proto files under proto/: ``python proto/generate.py``.

For each ``proto/<path>/<name>.proto`` it writes ``<name>_pb2.py`` (messages),
``<name>_pb2.pyi`` (their types, for mypy and editors) and ``<name>_pb2_grpc.py``
(service stubs and servicers) into ``<path>/`` under the repository root -- so
``proto/asyncpipe/ingest/v1/ingest.proto`` becomes the module
``asyncpipe.ingest.v1.ingest_pb2``. The output is committed: installing asyncpipe needs
neither protoc nor grpcio-tools, only the protobuf and grpcio runtimes, which must be at
least the versions that generated the code (the modules check this on import).

Needs grpcio-tools (in the ``test`` extra). ``--out DIR`` writes under DIR instead;
tests/ingest/test_proto_generated.py uses it to check that the committed code is current.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PROTO_ROOT.parent


def proto_files() -> list[Path]:
    """The .proto sources, sorted, as paths relative to proto/ (protoc's import names)."""
    return sorted(path.relative_to(PROTO_ROOT) for path in PROTO_ROOT.rglob("*.proto"))


def generate(out: Path) -> None:
    """Compile every .proto under proto/ into Python modules under ``out``.

    Raises RuntimeError if protoc reports an error (it prints the details to stderr).
    """
    # google/protobuf/*.proto (timestamp.proto...) ship inside grpc_tools; protoc only
    # finds them when given their directory, as `python -m grpc_tools.protoc` does.
    well_known = resources.files("grpc_tools") / "_proto"
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"--proto_path={PROTO_ROOT}",
        f"--proto_path={well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(path.as_posix() for path in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT,
        help="root directory of the generated package tree (default: the repository)",
    )
    try:
        generate(parser.parse_args().out)
    except RuntimeError as error:
        sys.exit(str(error))


if __name__ == "__main__":
    main()
