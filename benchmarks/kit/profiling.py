"""Where a server's time goes under load: py-spy samples of its process, summed by function and by part.

The hot-path benches (issue 24) must show, next to a ratio they miss, the profile that says where
the remaining time goes. :func:`record` samples a running process with py-spy (``py-spy record
--format raw``: one line per distinct stack with its sample count) while the caller drives load,
and :func:`summarise` folds the stacks into

- the functions that hold the most samples themselves (self time), and
- the share of each **part** (:data:`PARTS`: the proxy's own code, aiohttp's HTTP machinery, the
  event loop and socket writes, metrics, redis-py, the engine client), by the innermost frame that
  belongs to one, so every sample counts once.

py-spy must be on PATH or next to the interpreter (``pip install py-spy``, in the dev extras) and
may need root to attach (it uses ``process_vm_readv``). Idle samples are left out (py-spy's
default), so shares are of busy time.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

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


def _part_of(frame: str) -> str | None:
    for part, needles in PARTS:
        if any(needle in frame for needle in needles):
            return part
    return None


def summarise(raw: str, rate: int = 200) -> Profile:
    """Fold py-spy's raw output (``frame;frame;... count`` per line, outermost first) sampled at ``rate``."""
    profile = Profile(rate=rate)
    for line in raw.splitlines():
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        profile.samples += count
        profile.self_time[frames[-1]] += count
        part = next((p for p in map(_part_of, reversed(frames)) if p is not None), OTHER)
        profile.parts[part] += count
    return profile


def py_spy() -> str | None:
    """The py-spy executable: next to this interpreter, or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(pid: int, seconds: float, drive: Callable[[], T], rate: int = 200) -> tuple[T, Profile]:
    """Sample process ``pid`` with py-spy for ``seconds`` while ``drive()`` runs (the load);
    ``drive``'s result and the folded profile. Raises RuntimeError when py-spy is missing or fails."""
    executable = py_spy()
    if executable is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy; it is in the dev extras)")
    with tempfile.TemporaryDirectory(prefix="hos-py-spy-") as folder:
        out = Path(folder) / "raw.txt"
        command = [executable, "record", "--format", "raw", "--rate", str(rate), "--duration", str(int(seconds))]
        spy = subprocess.Popen(
            [*command, "--pid", str(pid), "--output", str(out), "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            result = drive()
        finally:
            _, err = spy.communicate(timeout=seconds + 30)
        if spy.returncode != 0 or not out.exists():
            raise RuntimeError(f"py-spy failed ({spy.returncode}): {err.decode(errors='replace').strip()[-300:]}")
        return result, summarise(out.read_text(), rate)
