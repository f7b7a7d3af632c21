"""Reading a text file as numbered lines, a chunk at a time, without blocking the loop.

Files are read in a thread in binary chunks (default 256 KiB). A chunk is cut after its
last ``\\n``; the tail waits for the next chunk, so a line is never split (a line longer
than a chunk just takes several reads). Each cut is decoded in one call; when that fails,
the cut is decoded line by line and every undecodable line becomes a dead letter
(``file:line: cannot decode ...``) while the lines around it go on.

Line numbers count ``\\n``-terminated lines from 1, the way editors and ``grep -n`` do.
Encodings must be ASCII-compatible (UTF-8, Latin-1, cp1252, ...): a ``\\n`` byte is then
always a line break. A UTF-8 byte-order mark at the start of the file is skipped.
"""

from __future__ import annotations

import asyncio
import codecs
import io
import os
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from dataclasses import dataclass

from ._files import opened
from ._reject import reject_item

__all__ = ["DEFAULT_CHUNK_SIZE", "Segment", "check_chunk_size", "check_encoding", "read_segments"]

#: Bytes read per call (256 KiB): large enough that the thread hand-off of a read is amortised
#: over thousands of lines, small enough that the lines just read are still in the CPU cache
#: when they are parsed, and that decoding a chunk never holds the loop for long.
DEFAULT_CHUNK_SIZE = 1 << 18

_BOM = codecs.BOM_UTF8


@dataclass(slots=True)
class Segment:
    """Consecutive decoded lines of a file, the first being line ``first_line``.

    ``follows`` is false when an undecodable line was dropped just before this segment
    (so a record cannot continue into it from the previous segment).
    """

    first_line: int
    lines: list[str]
    follows: bool = True


def check_encoding(encoding: str) -> str:
    """Return the codec's canonical name; raise ``ValueError`` for an encoding in which a
    ``\\n`` byte is not always a line break (UTF-16, UTF-32, ...)."""
    name = codecs.lookup(encoding).name
    if name == "utf-8-sig":
        return "utf-8"  # the BOM is skipped by the reader
    if "\n".encode(name) != b"\n" or name.startswith(("utf-16", "utf-32")):
        raise ValueError(f"encoding {encoding!r} is not supported: use an ASCII-compatible one")
    return name


def check_chunk_size(chunk_size: int) -> int:
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1 (bytes), got {chunk_size!r}")
    return chunk_size


async def read_segments(
    path: str | os.PathLike[str],
    *,
    encoding: str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    keepends: bool = False,
) -> AsyncGenerator[Segment, None]:
    """Yield the file's lines as :class:`Segment` s of up to about ``chunk_size`` bytes.

    With ``keepends`` lines keep their terminators (what ``csv`` needs to read quoted
    fields spanning lines; ``\\r`` alone also ends a line then, as with ``newline=""``);
    without, lines end before ``\\n`` (and a ``\\r`` just before it is dropped).
    Undecodable lines are rejected (see the module docstring) and split the segment.
    Must run inside a source node for those rejections to become dead letters.
    """
    line = 1
    cuts = _cuts(path, chunk_size)
    async with aclosing(cuts):
        async for cut in cuts:
            for segment in _segments_of(path, cut, encoding, line, keepends):
                yield segment
            line += cut.count(b"\n") + (0 if cut.endswith(b"\n") else 1)


def _segments_of(
    path: str | os.PathLike[str], cut: bytes, encoding: str, line: int, keepends: bool
) -> Iterator[Segment]:
    try:
        text = cut.decode(encoding)
    except UnicodeDecodeError:
        for item in _decode_each(cut, encoding, line, keepends):
            if isinstance(item, Segment):
                yield item
            else:  # rejected in line order, after the lines before it were used
                number, raw, exc = item
                reject_item(
                    raw,
                    f"{os.fspath(path)}:{number}: cannot decode line as {encoding}: "
                    f"{exc.reason} at byte {exc.start}",
                    index=number,
                    origin=os.fspath(path),
                )
    else:
        yield Segment(line, _split(text, keepends))


async def _cuts(path: str | os.PathLike[str], chunk_size: int) -> AsyncGenerator[bytes, None]:
    """The file's bytes in pieces that end just after a ``\\n`` (the last one may not)."""
    loop = asyncio.get_running_loop()
    async with opened(path, "rb") as file:
        tail = b""
        first = True
        while True:
            data = await loop.run_in_executor(None, file.read, chunk_size)
            if first:
                first = False
                if data.startswith(_BOM):
                    data = data[len(_BOM) :]
            if not data:
                if tail:
                    yield tail
                return
            if tail:
                data = tail + data
            cut = data.rfind(b"\n") + 1
            tail = data[cut:]
            if cut:
                yield data[:cut]


def _split(text: str, keepends: bool) -> list[str]:
    if keepends:
        # StringIO(newline="") splits exactly like a file opened with newline="" (the csv
        # module's requirement) and, unlike str.splitlines, not on \x0c, \x85, \u2028...
        return list(io.StringIO(text, newline=""))
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    if "\r" in text:
        lines = [s[:-1] if s.endswith("\r") else s for s in lines]
    return lines


def _decode_each(
    cut: bytes, encoding: str, first_line: int, keepends: bool
) -> Iterator[Segment | tuple[int, bytes, UnicodeDecodeError]]:
    """Decode line by line: the runs of good lines as segments, and between them
    ``(line number, raw line, error)`` for each line that cannot be decoded."""
    current = Segment(first_line, [], True)
    raw_lines = cut.split(b"\n")
    ended = [True] * (len(raw_lines) - 1) + [False]
    if raw_lines[-1] == b"":
        raw_lines.pop()
        ended.pop()
    for offset, raw in enumerate(raw_lines):
        number = first_line + offset
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            if current.lines:
                yield current
            yield number, raw, exc
            current = Segment(number + 1, [], False)
            continue
        if keepends:
            current.lines.append(text + "\n" if ended[offset] else text)
        else:
            current.lines.append(text[:-1] if text.endswith("\r") else text)
    if current.lines:
        yield current
