"""A process for ``tests/test_benchmark_kit.py`` to count: one ``marker()`` call per line read,
acknowledged with a line (run as ``python -m benchmarks.kit.counting STATS -m tests.counting_target``)."""

from __future__ import annotations

import sys


def marker() -> None:
    """Called once per line: the count the test expects."""


def main() -> None:
    for _line in sys.stdin:
        marker()
        print("ok", flush=True)


if __name__ == "__main__":
    main()
