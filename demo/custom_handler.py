"""A custom handler: state prepared once in ``setup()``, a CPU-heavy step in worker
processes, and a result emitted when the input ends (``finish()``).

Run: ``python demo/custom_handler.py``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from asyncpipe import BaseHandler, HandlerNode, PipelineExecutor


class Fingerprint(BaseHandler):
    """Hashes each record many times: CPU-bound, so the node runs it with ``cpu=True``.

    ``setup()`` runs once in each worker process (load a model there); only the batches
    travel afterwards."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self.salt = b""

    async def setup(self) -> None:
        self.salt = b"asyncpipe"  # e.g. a model or a lookup table, loaded once per worker

    def handle(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for record in batch:
            digest = record["name"].encode()
            for _ in range(self.rounds):
                digest = hashlib.sha256(self.salt + digest).digest()
            record["fingerprint"] = digest.hex()[:12]
        return batch


class Count(BaseHandler):
    """Counts records per first letter; emits the totals once every input has ended."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    async def handle(self, batch: list[dict[str, Any]]) -> None:
        for record in batch:
            letter = record["name"][0]
            self.counts[letter] = self.counts.get(letter, 0) + 1

    async def finish(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


def names() -> Any:
    for start in range(0, 400, 100):
        yield [{"name": f"{'ABC'[i % 3]}-{i}"} for i in range(start, start + 100)]


def main() -> None:
    source = HandlerNode("names", names)
    hashed = HandlerNode("fingerprint", Fingerprint(rounds=2_000), [source], cpu=True)
    counted = HandlerNode("count", Count(), [hashed])
    results: list[Any] = []
    sink = HandlerNode("collect", results.append, [counted])
    executor = PipelineExecutor([source], [hashed, counted, sink], max_workers=2)
    executor.start()  # the seed's synchronous entry point
    print(results)  # noqa: T201 - an example program: [{'A': 134, 'B': 133, 'C': 133}]


if __name__ == "__main__":  # needed: worker processes import this module
    main()
