"""The committed gRPC code is what proto/generate.py makes of proto/ today."""

from __future__ import annotations

import ast
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Where generated code is committed: the package, and the example of a service of one's own.
GENERATED_DIRS = (Path("asyncpipe"), Path("demo", "own_proto"))
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
REGENERATE = "run `python proto/generate.py` and commit the result"


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tree proto/generate.py writes now, in a temporary directory."""
    out = tmp_path_factory.mktemp("generated")
    done = subprocess.run(
        [sys.executable, str(REPO / "proto" / "generate.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return out


def generated_files(root: Path) -> set[Path]:
    return {
        path.relative_to(root)
        for path in root.rglob("*")
        if path.is_file() and path.name.endswith(GENERATED_SUFFIXES)
    }


def embedded_descriptor(module: Path) -> bytes:
    """The serialized FileDescriptorProto a generated ``*_pb2.py`` registers on import."""
    for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "AddSerializedFile"
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, bytes)
        ):
            return node.args[0].value
    raise AssertionError(f"no AddSerializedFile(b'...') call in {module}")


def test_committed_code_describes_the_current_protos(fresh: Path) -> None:
    # Compares what the .proto files say (the descriptor each module registers), not the
    # code around it, which changes with the grpcio-tools version: so it runs with any.
    fresh_files = generated_files(fresh)
    assert fresh_files, "proto/generate.py generated nothing"
    committed_files = {
        folder / path for folder in GENERATED_DIRS for path in generated_files(REPO / folder)
    }
    missing = sorted(map(str, fresh_files - committed_files))
    assert not missing, f"generated files not committed: {missing}: {REGENERATE}"
    orphans = sorted(map(str, committed_files - fresh_files))
    assert not orphans, f"generated files whose .proto is gone, delete them: {orphans}"
    for path in sorted(fresh_files):
        if path.name.endswith("_pb2.py"):
            assert embedded_descriptor(REPO / path) == embedded_descriptor(fresh / path), (
                f"{path} is stale: {REGENERATE}"
            )


def test_committed_code_is_byte_identical_to_regenerated(fresh: Path) -> None:
    installed = metadata.version("grpcio-tools")
    generator_versions = {
        line.split("=")[1].strip().strip("'\"")
        for folder in GENERATED_DIRS
        for path in (REPO / folder).rglob("*_pb2_grpc.py")
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.startswith("GRPC_GENERATED_VERSION")
    }
    if generator_versions != {installed}:
        pytest.skip(
            f"committed code comes from grpcio-tools {sorted(generator_versions)}, "
            f"{installed} is installed: the output differs by version"
        )
    for path in sorted(generated_files(fresh)):
        assert (REPO / path).read_bytes() == (fresh / path).read_bytes(), (
            f"{path} differs from what proto/ generates: {REGENERATE}"
        )
