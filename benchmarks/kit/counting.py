"""Python function calls per answer: how much work a hot path does, without the machine's noise.

On the 2-core VM these benches run on, one server's req/s moves by a quarter between rounds and
py-spy's samples move with it; how many Python functions a request calls does not. So besides
req/s and CPU per answer, a bench can count calls: the server runs under this module as its
launcher,

    python -m benchmarks.kit.counting STATS -m proxy --port … --workers 1

which runs the module (``runpy``, as ``python -m`` would) with a ``cProfile`` profiler that is
off until SIGUSR1 and written to STATS (``pstats`` format) on SIGUSR2, so the count covers only
what the bench drove in between — no imports, no start-up, no warm-up. :func:`counting` does
that around a block; :class:`Calls` reads the file and divides by the requests served.

cProfile slows the server several times over, so the calls are the figure here, never its
timings. A coroutine counts once per step: each resumption after an ``await`` that suspended is
a call to cProfile (a request's handler that waits twice counts 3), which is the interpreter's
work too. Each call is a Python function (or a C function called from Python), the unit the
interpreter's time is spent in (``perf`` on the proxy put 68-75 % of its CPU in libpython, the
rest in the kernel and C extensions: 2026-12-06, issue 24).
"""

from __future__ import annotations

import contextlib
import cProfile
import os
import pstats
import re
import runpy
import signal
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.kit.profiling import OTHER, part_of

START, STOP = signal.SIGUSR1, signal.SIGUSR2
_ADDRESS = re.compile(r" at 0x[0-9a-f]+")
C_FUNCTIONS = "C functions called from Python (builtins, C extensions)"


@dataclass(frozen=True)
class Calls:
    """Calls per request, in total and by function (``file:line(name)``, paths shortened)."""

    total: float
    by_function: dict[str, float]

    @classmethod
    def read(cls, path: Path, requests: int) -> Calls:
        stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]  # pstats' documented table
        per = max(requests, 1)
        by_function: dict[str, float] = {}
        for (file, line, name), (_primitive, calls, *_rest) in stats.items():
            # A C call's name may hold an address ("… at 0x7f55…"): one per process, dropped so
            # that two servers' counts of the same function compare.
            where = f"{_short(file)}:{line}({name})" if file != "~" else _ADDRESS.sub("", name)
            by_function[where] = by_function.get(where, 0.0) + calls / per
        return cls(sum(by_function.values()), by_function)

    def by_part(self) -> dict[str, float]:
        """Calls per request by part of the server (``profiling.PARTS``, by the function's file;
        a C function called from Python — a builtin, a C extension's method — is a part of its own)."""
        parts: dict[str, float] = {}
        for function, calls in self.by_function.items():
            part = C_FUNCTIONS if function.startswith("<") else (part_of(function) or OTHER)
            parts[part] = parts.get(part, 0.0) + calls
        return dict(sorted(parts.items(), key=lambda item: -item[1]))

    def more_than(self, other: Calls, top: int = 12) -> list[tuple[float, str]]:
        """The functions called more often per request here than in ``other``, most first."""
        grown = {f: n - other.by_function.get(f, 0.0) for f, n in self.by_function.items()}
        return sorted(((n, f) for f, n in grown.items() if n >= 0.05), reverse=True)[:top]


ROOT = Path(__file__).resolve().parents[2]
# Where a function's file lives, shortened: the project's relative to its root, a library's from
# its package, the standard library's from its module.
_PREFIXES = (str(ROOT) + "/", sysconfig.get_paths()["purelib"] + "/", sysconfig.get_paths()["stdlib"] + "/")


def _short(file: str) -> str:
    for prefix in _PREFIXES:
        if file.startswith(prefix):
            return file.removeprefix(prefix)
    return file


@contextlib.contextmanager
def counting(pid: int, stats: Path, timeout: float = 30.0) -> Iterator[None]:
    """Count the calls of the server ``pid`` (started under this module, writing ``stats``)
    while the block runs; the file is complete when the block ends."""
    stats.unlink(missing_ok=True)
    os.kill(pid, START)
    try:
        yield
    finally:
        os.kill(pid, STOP)
        deadline = time.monotonic() + timeout
        # Written whole (renamed into place), between two of the server's requests.
        while not stats.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server {pid} wrote no call counts to {stats} within {timeout:.0f} s")
            time.sleep(0.05)


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "-m":
        raise SystemExit("usage: python -m benchmarks.kit.counting STATS -m MODULE [ARG …]")
    stats, module = Path(argv[0]), argv[2]
    profiler = cProfile.Profile()

    def start(signum: int, frame: object) -> None:
        profiler.enable()

    def stop(signum: int, frame: object) -> None:
        profiler.disable()
        partial = stats.with_name(stats.name + ".partial")
        profiler.dump_stats(str(partial))
        partial.replace(stats)

    signal.signal(START, start)
    signal.signal(STOP, stop)
    sys.argv = [module, *argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
