"""Every ```python block of README.md and docs/*.md runs as a user would paste it.

Each block is written to ``example.py`` in a fresh directory and run with this Python.
A comment line just before a block's fence says what the block needs, invisibly to
readers of the rendered page:

* ``<!-- example: files=a.csv,inbox/b.csv -->``: those input files exist (contents below);
* ``<!-- example: path=demo/own_proto -->``: that repository directory is importable;
* ``<!-- example: pytest -->``: the block is a test module, run by pytest (no config);
* ``<!-- example: server -->`` then ``<!-- example: client -->``: the server block runs in
  the background, the client block against it, then the server is sent SIGTERM and must
  exit 0 (the port ``50051`` in both is replaced by a free one);
* ``<!-- example: needs=postgres -->``: ``DATABASE_URL`` names a real PostgreSQL database
  (a fresh one, from the ``pg_dsn`` fixture of ``tests/postgres.py``).

What a block prints is checked where the block says: ``print(x)  # expected`` (or a
comment line of its own right after the ``print``) must appear in its output, in order;
the comment may go on after the printed text (``# 2: two windows``).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TIMEOUT = 120.0
PORT = "50051"

#: The input files blocks may ask for with ``files=``.
FILES = {
    "scores.csv": "cpf,score\n11144477735,700\n52998224725,650\n",
    "inbox/scores.csv": "cpf,score\n11144477735,700\n",
}

_DIRECTIVE = re.compile(r"^<!--\s*example:(?P<words>.*?)-->\s*$")
_PRINTED = re.compile(r"^\s*print\(.*\)\s*#\s*(?P<expected>.+?)\s*$")
_COMMENT = re.compile(r"^\s*#\s*(?P<text>.+?)\s*$")


@dataclass
class Block:
    document: str
    line: int
    code: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        for kind in ("pytest", "server", "client"):
            if kind in self.options:
                return kind
        return "script"

    def expected_output(self) -> list[str]:
        """What the block says it prints, in order."""
        expected: list[str] = []
        lines = self.code.splitlines()
        for i, line in enumerate(lines):
            if match := _PRINTED.match(line):
                expected.append(match["expected"])
            elif "print(" in line and i + 1 < len(lines):
                if comment := _COMMENT.match(lines[i + 1]):
                    expected.append(comment["text"])
        return expected


def _blocks(document: Path) -> Iterator[Block]:
    lines = document.read_text(encoding="utf-8").splitlines()
    name = str(document.relative_to(ROOT))
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            options: dict[str, str] = {}
            if i > 0 and (match := _DIRECTIVE.match(lines[i - 1].strip())):
                for word in match["words"].split():
                    key, _, value = word.partition("=")
                    options[key] = value
            end = lines.index("```", i + 1)
            yield Block(name, i + 1, "\n".join(lines[i + 1 : end]) + "\n", options)
            i = end
        i += 1


def _runs() -> list[list[Block]]:
    """Each run: one block, or a server block with its client."""
    runs: list[list[Block]] = []
    for document in DOCUMENTS:
        for block in _blocks(document):
            if block.kind == "client":
                assert runs and runs[-1][0].kind == "server" and len(runs[-1]) == 1, (
                    f"{block.document}:{block.line}: a client block follows its server block"
                )
                runs[-1].append(block)
            else:
                runs.append([block])
    return runs


RUNS = _runs()


def _free_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def _environment(block: Block, request: pytest.FixtureRequest) -> dict[str, str]:
    env = dict(os.environ)
    # This checkout's asyncpipe, whatever the environment has installed.
    paths = [str(ROOT / block.options["path"])] if "path" in block.options else []
    paths.append(str(ROOT))
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if block.options.get("needs") == "postgres":
        env["DATABASE_URL"] = request.getfixturevalue("pg_dsn")
    return env


def _prepare(block: Block, directory: Path) -> None:
    for name in filter(None, block.options.get("files", "").split(",")):
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(FILES[name], encoding="utf-8")


def _says(comment: str, line: str) -> bool:
    """A printed line is what the comment promises (the comment may go on, after a
    separator, to explain it: ``# 2: the 30 days up to Nov 20 hold two``)."""
    if not line or not comment.startswith(line):
        return False
    return len(comment) == len(line) or not comment[len(line)].isalnum()


def _check_output(block: Block, output: str) -> None:
    printed = [line.strip() for line in output.splitlines()]
    position = 0
    for expected in block.expected_output():
        found = [i for i in range(position, len(printed)) if _says(expected, printed[i])]
        assert found, f"{block.document}:{block.line} should print {expected!r}; printed:\n{output}"
        position = found[0] + 1


def _run(block: Block, directory: Path, env: dict[str, str], port: str) -> None:
    _prepare(block, directory)
    if block.kind == "pytest":
        (directory / "test_example.py").write_text(block.code, encoding="utf-8")
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        command += ["--rootdir", str(directory), "test_example.py"]
    else:
        (directory / "example.py").write_text(block.code.replace(PORT, port), encoding="utf-8")
        command = [sys.executable, "example.py"]
    done = subprocess.run(
        command, cwd=directory, env=env, capture_output=True, text=True, timeout=TIMEOUT
    )
    where = f"{block.document}:{block.line}"
    assert done.returncode == 0, f"{where} failed:\n{done.stdout}\n{done.stderr}"
    if block.kind == "pytest":
        assert " passed" in done.stdout and "failed" not in done.stdout, done.stdout
    _check_output(block, done.stdout)


@pytest.mark.parametrize("run", RUNS, ids=[f"{run[0].document}:{run[0].line}" for run in RUNS])
def test_block_runs(run: list[Block], tmp_path: Path, request: pytest.FixtureRequest) -> None:
    port = _free_port()
    if len(run) == 1:
        _run(run[0], tmp_path, _environment(run[0], request), port)
        return
    server, client = run
    assert server.kind == "server", f"{server.document}:{server.line} has no client block"
    _prepare(server, tmp_path)
    (tmp_path / "server.py").write_text(server.code.replace(PORT, port), encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "server.py"],
        cwd=tmp_path,
        env=_environment(server, request),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client_dir = tmp_path / "client"
        client_dir.mkdir()
        _run(client, client_dir, _environment(client, request), port)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, f"{server.document}:{server.line} server:\n{out}\n{err}"


def test_blocks_are_found() -> None:
    """The collector sees the README's blocks (a parsing slip would test nothing)."""
    readme = [block for run in RUNS for block in run if block.document == "README.md"]
    assert len(readme) >= 9
    assert {block.kind for block in readme} == {"script", "pytest", "server", "client"}
