"""Where a server's time goes under a bench's load: py-spy samples, saved and summed up.

``with sampling(pid, path):`` records the process ``pid`` with py-spy (``--nonblocking``: the
server is not paused per sample, so it runs as fast as unprofiled) while the block runs — a wrk
run, say — into ``path`` in py-spy's raw format (collapsed stacks, one ``frame;frame;… count``
line per stack: https://www.speedscope.app and ``flamegraph.pl`` read it as it is).
:func:`summary` turns that file into the lines a bench prints: the share of the samples spent in
(inclusive) each of the functions that matter most, heaviest first, and the share in named groups
of frames (``groups``: a label and the substrings of a frame that put a sample in it).

py-spy reads another process's memory: it needs root (or ``CAP_SYS_PTRACE``) and is in the dev
extras (``.venv/bin/py-spy``); :func:`available` says whether it can run here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from benchmarks.kit.processes import pinned
from catalog.processes import stop_process
from devstack.servers import child_setup


def _py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def available() -> str | None:
    """None when py-spy can sample here, else why not."""
    if _py_spy() is None:
        return "py-spy is not installed (pip install -e '.[dev]')"
    if os.geteuid() != 0:
        return "py-spy needs root to read another process"
    return None


@contextlib.contextmanager
def sampling(pid: int, path: Path, cpu: int | None = None, rate: int = 200) -> Iterator[None]:
    """Sample ``pid`` into ``path`` (raw, collapsed stacks) while the block runs; py-spy itself
    runs on ``cpu`` (the load generator's, so it takes nothing from the server's)."""
    py_spy = _py_spy()
    assert py_spy is not None, available()
    command = [py_spy, "record", "--pid", str(pid), "--format", "raw", "--output", str(path)]
    command += ["--rate", str(rate), "--nonblocking"]
    recorder = subprocess.Popen(
        pinned(command, cpu),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=child_setup(signal.SIGTERM),  # dies with the bench
    )
    try:
        yield
    finally:
        # SIGINT is py-spy's "stop and write what you have"; a SIGTERM would lose the samples.
        stop_process(recorder, 30, stop_signal=signal.SIGINT)


def _stacks(path: Path) -> Iterator[tuple[list[str], int]]:
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            yield stack.split(";"), int(count)


def _function(frame: str) -> str:
    # "handle (proxy/fastpath.py:62)" -> "handle (proxy/fastpath.py)": one entry per function.
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rpartition(':')[0]})" if where else name


def summary(path: Path, groups: Mapping[str, Sequence[str]] = {}, top: int = 12) -> list[str]:
    """What ``path`` says, as lines to print: the samples, the share of each group, then the
    ``top`` functions by inclusive share (idle time — the event loop waiting — is not sampled)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    grouped: Counter[str] = Counter()
    total = 0
    for frames, count in _stacks(path):
        total += count
        functions = {_function(frame) for frame in frames[1:]}  # frames[0] names the process
        inclusive.update(dict.fromkeys(functions, count))
        own[_function(frames[-1])] += count
        for label, needles in groups.items():
            if any(needle in frame for frame in frames for needle in needles):
                grouped[label] += count
    if total == 0:
        return [f"{path.name}: no samples"]
    lines = [f"{path.name}: {total:,} samples"]
    lines += [f"  {share * 100:5.1f} % {label}" for label, share in ((g, grouped[g] / total) for g in groups)]
    lines.append(f"  heaviest functions (inclusive %, own %), of {len(inclusive):,}:")
    for function, count in inclusive.most_common(top):
        lines.append(f"  {count / total * 100:5.1f} % {own[function] / total * 100:5.1f} %  {function}")
    return lines
