"""``python -m asyncpipe.demo`` -- placeholder until the demo issue lands."""

from __future__ import annotations

import sys


def main() -> int:
    print(
        "asyncpipe demo: not built yet.\n"
        "The bank pipeline demo (clients, transactions, scores -> SQLite) arrives with the\n"
        "demo issue. Meanwhile, see README.md for a pipeline you can run today."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
