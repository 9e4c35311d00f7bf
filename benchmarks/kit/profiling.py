"""Where a server's time goes under a bench's load: py-spy samples of its process, saved and summed up.

``with sampling(pid, path):`` records the process ``pid`` with py-spy (``--nonblocking``: the
server is not paused per sample, so it runs as fast as unprofiled) while the block runs — a wrk
run, say — into ``path`` in py-spy's raw format (collapsed stacks, one ``frame;frame;… count``
line per stack: https://www.speedscope.app and ``flamegraph.pl`` read it as it is);
:func:`record` does the same around a call and folds the samples at once. Two ways to read them:

- :func:`summarise`: a :class:`Profile` — the functions holding the most samples themselves, and
  the share of each **part** (:data:`PARTS`: the proxy's own code, aiohttp's HTTP machinery, the
  event loop, socket writes, metrics, redis-py, the engine client), each sample charged to the
  innermost frame that belongs to one, so every sample counts once (the cache bench compares
  the proxy with a bare app this way);
- :func:`summary`: lines to print — the share of samples passing through each of named groups of
  frames (inclusive: a sample may count in several) and the heaviest functions (the ratelimit
  bench names the limiter's steps this way).

Idle samples are left out (py-spy's default): shares are of busy time. py-spy reads another
process's memory: it needs root (or ``CAP_SYS_PTRACE``) and is in the dev extras
(``.venv/bin/py-spy``); :func:`available` says whether it can run here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from benchmarks.kit.processes import pinned
from catalog.processes import stop_process
from devstack.servers import child_setup

T = TypeVar("T")

# Parts of a Python server's time, by where a frame's file lives (first match wins, innermost
# frame first). The event loop itself is C (uvloop) and shows up as the frame that runs it.
PARTS: list[tuple[str, tuple[str, ...]]] = [
    # The C loop's own time is charged to the Python frame that started it (asyncio's Runner.run,
    # or aiohttp's run_app around it): matched before aiohttp so the bare app's counts as the loop.
    ("event loop (uvloop/asyncio, C)", ("Runner.run (", "run_app (aiohttp/web.py", "uvloop/")),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("redis-py", ("redis/",)),
    ("engine client (elasticsearch, elastic_transport)", ("elasticsearch/", "elastic_transport/")),
    ("socket writes (aiohttp http_writer, asyncio streams)", ("aiohttp/http_writer.py", "asyncio/streams.py")),
    ("aiohttp request/response machinery", ("aiohttp/", "multidict/", "yarl/")),
    ("the proxy's own code", ("proxy/", "catalog/")),
    ("asyncio (tasks, futures, timeouts)", ("asyncio/",)),
]
OTHER = "other Python"


@dataclass
class Profile:
    """py-spy's samples of one process, folded."""

    samples: int = 0
    rate: int = 200  # samples per second
    self_time: Counter[str] = field(default_factory=Counter)
    parts: Counter[str] = field(default_factory=Counter)

    def top(self, n: int) -> list[tuple[float, str]]:
        """The ``n`` functions with the most samples of their own, as (share, 'function (file:line)')."""
        return [(count / max(self.samples, 1), frame) for frame, count in self.self_time.most_common(n)]

    def shares(self) -> list[tuple[float, str]]:
        return [(count / max(self.samples, 1), part) for part, count in self.parts.most_common()]

    def microseconds(self, samples: int, requests: int) -> float:
        """Busy time per request of ``samples`` (of this profile), when it served ``requests``."""
        return samples / self.rate / max(requests, 1) * 1e6

    def part_rows(self, requests: int) -> dict[str, float]:
        """Microseconds of busy time per request, by part (``requests``: answered while sampled)."""
        return {part: self.microseconds(count, requests) for part, count in self.parts.most_common()}

    def lines(self, n: int = 12) -> list[str]:
        """A printable summary: parts, then the top functions."""
        out = [f"py-spy: {self.samples:,} samples (busy time only)", "  by part:"]
        out += [f"    {share:6.1%}  {part}" for share, part in self.shares()]
        out.append(f"  top {n} functions by own time:")
        out += [f"    {share:6.1%}  {frame}" for share, frame in self.top(n)]
        return out


def part_of(frame: str) -> str | None:
    """The part (:data:`PARTS`) a frame or a function's ``file:line`` belongs to; None for none."""
    for part, needles in PARTS:
        if any(needle in frame for needle in needles):
            return part
    return None


def _stacks(raw: str) -> Iterator[tuple[list[str], int]]:
    """py-spy's raw lines as (frames outermost first, samples)."""
    for line in raw.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            yield stack.split(";"), int(count)


def summarise(raw: str, rate: int = 200) -> Profile:
    """Fold py-spy's raw output sampled at ``rate`` per second into parts and functions."""
    profile = Profile(rate=rate)
    for frames, count in _stacks(raw):
        profile.samples += count
        profile.self_time[frames[-1]] += count
        part = next((p for p in map(part_of, reversed(frames)) if p is not None), OTHER)
        profile.parts[part] += count
    return profile


def _function(frame: str) -> str:
    # "handle (proxy/fastpath.py:62)" -> "handle (proxy/fastpath.py)": one entry per function.
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rpartition(':')[0]})" if where else name


def summary(path: Path, groups: Mapping[str, Sequence[str]] = {}, top: int = 12) -> list[str]:
    """What the raw file ``path`` says, as lines to print: the samples, the share of each group
    (a label and the substrings of a frame that put a sample in it), then the ``top`` functions
    by inclusive share (idle time — the event loop waiting — is not sampled)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    grouped: Counter[str] = Counter()
    total = 0
    for frames, count in _stacks(path.read_text()):
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


def record(pid: int, drive: Callable[[], T], cpu: int | None = None, rate: int = 200) -> tuple[T, Profile]:
    """``drive()`` (the load) with process ``pid`` sampled meanwhile: its result and the folded
    profile. Raises RuntimeError when py-spy cannot run here or wrote nothing."""
    why = available()
    if why is not None:
        raise RuntimeError(why)
    with tempfile.TemporaryDirectory(prefix="hos-py-spy-") as folder:
        out = Path(folder) / "raw.txt"
        with sampling(pid, out, cpu, rate):
            result = drive()
        if not out.exists():
            raise RuntimeError("py-spy wrote no samples")
        return result, summarise(out.read_text(), rate)
