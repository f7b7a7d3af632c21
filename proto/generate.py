"""Regenerate the Python code of the repository's .proto files: ``python proto/generate.py``.

For each ``proto/<path>/<name>.proto`` it writes ``<name>_pb2.py`` (messages),
``<name>_pb2.pyi`` (their types, for mypy and editors) and ``<name>_pb2_grpc.py``
(service stubs and servicers) into ``<path>/`` under the repository root -- so
``proto/asyncpipe/demo/v1/bank.proto`` becomes the module
``asyncpipe.demo.v1.bank_pb2``. The example ``demo/own_proto/`` is compiled the same way
in its own folder (its modules import each other by their bare names, as a script there
does). The output is committed: installing asyncpipe needs
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

#: Source roots (protoc's import roots) and where their code goes, relative to the
#: output root: the package's protos, and the example of a service of one's own.
TREES = ((PROTO_ROOT, Path()), (REPO_ROOT / "demo" / "own_proto", Path("demo", "own_proto")))


def proto_files(root: Path = PROTO_ROOT) -> list[Path]:
    """The .proto sources under ``root``, sorted, as paths relative to it (protoc's
    import names)."""
    return sorted(path.relative_to(root) for path in root.rglob("*.proto"))


def generate(out: Path) -> None:
    """Compile every .proto of :data:`TREES` into Python modules under ``out``.

    Raises RuntimeError if protoc reports an error (it prints the details to stderr).
    """
    # google/protobuf/*.proto (timestamp.proto...) ship inside grpc_tools; protoc only
    # finds them when given their directory, as `python -m grpc_tools.protoc` does.
    well_known = resources.files("grpc_tools") / "_proto"
    for root, relative in TREES:
        target = out / relative
        target.mkdir(parents=True, exist_ok=True)
        args = [
            "grpc_tools.protoc",
            f"--proto_path={root}",
            f"--proto_path={well_known}",
            f"--python_out={target}",
            f"--pyi_out={target}",
            f"--grpc_python_out={target}",
            *(path.as_posix() for path in proto_files(root)),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed: {' '.join(args)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT,
        help="root directory of the generated trees (default: the repository)",
    )
    try:
        generate(parser.parse_args().out)
    except RuntimeError as error:
        sys.exit(str(error))


if __name__ == "__main__":
    main()
