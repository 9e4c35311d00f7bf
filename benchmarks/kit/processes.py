"""Starting the processes a bench measures: CPU pinning, a spawned child, a proxy that is ready.

Every child is tied to the bench (it gets SIGTERM if the bench dies) and is stopped with
``devstack.servers.stop_process``; a bench never leaves a server behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from benchmarks.kit.scrape import metric, scrape_sync
from catalog.processes import stop_process
from devstack.servers import child_setup, free_port, wait_http

ROOT = Path(__file__).resolve().parent.parent.parent
HOT_URL = "/api/search?q=wand"  # the one cached search the wrk benches hammer
# The limiter on, with a bucket too large to run dry: every answer is a 200, every decision taken.
BIG_BUCKET = {"RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_MAX": "1000000000", "RATE_LIMIT_TTL": "1000"}
PROXY_STOP_S = 40.0  # a proxy's supervisor waits up to 30 s for its workers before it exits


def interrupt_on_sigterm() -> None:
    """From now on a SIGTERM raises KeyboardInterrupt, so a bench cleans up as on a Ctrl-C."""

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)


def pinning_cpus() -> tuple[int | None, int | None]:
    """(server CPU, wrk CPU) when two CPUs and ``taskset`` are available, else (None, None)."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2 or shutil.which("taskset") is None:
        return None, None
    return cpus[0], cpus[1]


def pin_redis(urls: list[str], cpu: int | None) -> list[int]:
    """Move the local ``redis-server`` behind each of ``urls`` to ``cpu`` (every thread,
    :func:`pin_trees`); their pids.

    For benches that measure the proxy's own cost with Redis beside it: unpinned, Redis runs on
    the proxy's core too, and its work is charged to the proxy (py-spy saw a fifth of the limited
    proxy's samples in the socket write that woke Redis, ``benchmarks/ratelimit.py --profile``),
    where in production Redis has a machine of its own. A Redis that is not ours (another host:
    nothing here listens for it, :func:`listening_pids`) is left alone.
    """
    if cpu is None:
        return []
    pids = listening_pids(urls)
    pin_trees(pids, {cpu})
    return pids


def _threads(pid: int) -> list[int]:
    try:
        return [int(task) for task in os.listdir(f"/proc/{pid}/task")]
    except OSError:  # gone meanwhile
        return []


def pin_trees(roots: Sequence[int], cpus: set[int]) -> int:
    """Move every thread of ``roots`` and of their descendants to ``cpus``; how many moved.

    For a bench that gives the proxy a core of its own while the servers behind it (the engine's
    JVM, Postgres) run beside it, as they would on machines of their own in production. A thread
    or process started later inherits its creator's CPUs (a JVM's new threads, a Postgres backend
    forked by the postmaster). Linux only.
    """
    processes = _cpu_ticks_by_process()
    moved = 0
    for root in roots:
        for pid in _tree(root, processes):
            for tid in _threads(pid):
                with contextlib.suppress(OSError):  # a thread that ended meanwhile
                    os.sched_setaffinity(tid, cpus)
                    moved += 1
    return moved


_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def listening_pids(urls: Sequence[str]) -> list[int]:
    """The local processes listening on the ports of ``urls`` (``scheme://host:port/...``):
    the servers behind a stack's URLs, whoever started them (``make bench`` starts one stack for
    every bench, so a bench's own stack then has no processes). A URL of another host gives none,
    even when something here listens on its port. Linux only (/proc/net/tcp, /proc/<pid>/fd)."""
    ports = {split.port for split in map(urlsplit, urls) if split.hostname in _LOOPBACK} - {None}
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()  # sl local_address rem_address st ... inode
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) in ports:  # 0A: LISTEN
                    inodes.add(f"socket:[{fields[9]}]")
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(f"/proc/{entry}/fd/{fd}") in inodes for fd in os.listdir(f"/proc/{entry}/fd")):
                found.append(int(entry))
    return found


@dataclass(frozen=True)
class SchedTimes:
    """Seconds a process tree's threads have so far spent running on a CPU and runnable but
    waiting for one (``/proc/<pid>/task/*/schedstat``): the second is what other programs on its
    cores cost its latency, which its own CPU time cannot show."""

    running: float
    waiting: float


def tree_sched_times(root: int) -> SchedTimes:
    """:class:`SchedTimes` of ``root`` and its living descendants, all their threads. Linux only."""
    running = waiting = 0
    for pid in _tree(root, _cpu_ticks_by_process()):
        for tid in _threads(pid):
            with contextlib.suppress(OSError, ValueError):
                ran, waited = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[:2]
                running += int(ran)
                waiting += int(waited)
    return SchedTimes(running / 1e9, waiting / 1e9)


def pinned(command: list[str], cpu: int | None) -> list[str]:
    """``command`` run on ``cpu`` alone (``taskset``), or as it is when ``cpu`` is None."""
    return (["taskset", "-c", str(cpu)] if cpu is not None else []) + command


def spawn(
    command: list[str], env: dict[str, str] | None = None, cpu: int | None = None, output: IO[bytes] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``command`` in the repository root, in its own session, dying with us (PDEATHSIG).

    ``output``: where its stdout and stderr go (default: ours). Call it from the main thread: the
    death signal follows the thread that forked.
    """
    # Its own session: a Ctrl-C is ours to handle (we stop it).
    return subprocess.Popen(
        pinned(command, cpu),
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=None if output is None else subprocess.STDOUT,
        preexec_fn=child_setup(signal.SIGTERM),  # no threads run here: preexec_fn is safe
    )


def wait_answering(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Return once ``url`` answers 200; raise when ``proc`` exits or ``timeout`` passes first."""
    if not wait_http(url, proc, timeout):
        raise RuntimeError(f"{url} did not answer (process exit status {proc.poll()})")


def await_proxy(proc: subprocess.Popen[bytes], base: str, workers: int) -> str:
    """``base`` once the proxy answers and follows the catalog generation (else its cache is blind)."""
    wait_answering(base + "/healthz", proc)
    deadline = time.monotonic() + 30
    while metric(scrape_sync(base), "search_proxy_cache_following") < 1:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("the proxy does not follow the catalog generation (Redis?)")
        time.sleep(0.2)
    time.sleep(1.0 if workers > 1 else 0.1)  # every worker subscribed, not only the first
    return base


def launcher(counted_to: Path | None) -> list[str]:
    """The start of a Python server's command (``-m MODULE …`` follows): the interpreter, or the
    call counter writing to ``counted_to`` (``benchmarks/kit/counting.py``)."""
    return (
        [sys.executable] if counted_to is None else [sys.executable, "-m", "benchmarks.kit.counting", str(counted_to)]
    )


def start_server(
    module: list[str],
    ready_url: str,
    env: dict[str, str] | None = None,
    *,
    counted_to: Path | None = None,
    cpu: int | None = None,
    timeout: float = 60,
) -> subprocess.Popen[bytes]:
    """``python -m MODULE …`` (``module``: the name and its arguments) started with :func:`spawn`
    (under the call counter with ``counted_to``), once ``ready_url`` answers 200; stopped again
    if it does not."""
    proc = spawn([*launcher(counted_to), "-m", *module], env, cpu)
    try:
        wait_answering(ready_url, proc, timeout)
    except BaseException:
        stop_process(proc)
        raise
    return proc


def start_hot_proxy(
    env: dict[str, str], cpu: int | None, children: list[subprocess.Popen[bytes]], *, counted_to: Path | None = None
) -> str:
    """A 1-worker proxy on ``cpu`` (put in ``children``) whose :data:`HOT_URL` is a fast-path hit.

    ``counted_to``: run it under ``benchmarks.kit.counting``, writing its call counts there (its
    one process is the worker: ``counting.counting(children[-1].pid, counted_to)``)."""
    port = free_port()
    proc = spawn(
        [*launcher(counted_to), "-m", "proxy", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], env, cpu
    )
    children.append(proc)
    base = await_proxy(proc, f"http://127.0.0.1:{port}", 1)
    for _ in range(3):  # cached, then a hit served by the fast path
        with urllib.request.urlopen(base + HOT_URL, timeout=10) as response:
            response.read()
    return base


def _cpu_ticks_by_process() -> dict[int, tuple[int, int]]:
    """Every process's (parent, user + system clock ticks so far), from /proc."""
    found: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        found[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return found


def _tree(root: int, processes: dict[int, tuple[int, int]]) -> set[int]:
    members, grew = {root}, True
    while grew:
        grew = False
        for pid, (parent, _) in processes.items():
            if parent in members and pid not in members:
                members.add(pid)
                grew = True
    return members


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds (user + system) used so far by ``root`` and its living descendants: a server's
    cost, read around a measured run (a proxy's supervisor and its worker are one tree). Linux
    only (/proc)."""
    processes = _cpu_ticks_by_process()
    return sum(processes[pid][1] for pid in _tree(root, processes) if pid in processes) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CoreTimes:
    """One core's CPU seconds so far, from /proc/stat: ``busy`` (user, nice, system, irq,
    softirq) and ``steal`` (taken by the hypervisor: time a run could not use, however idle the
    machine looked)."""

    busy: float
    steal: float


def core_times(cpu: int | None = None) -> CoreTimes:
    """``cpu``'s times so far (every core's, summed, when None)."""
    name = "cpu" if cpu is None else f"cpu{cpu}"
    with open("/proc/stat") as stat:
        for line in stat:
            fields = line.split()  # cpuN user nice system idle iowait irq softirq steal ...
            if fields and fields[0] == name:
                ticks = [int(f) for f in fields[1:9]]
                hz = os.sysconf("SC_CLK_TCK")
                return CoreTimes((ticks[0] + ticks[1] + ticks[2] + ticks[5] + ticks[6]) / hz, ticks[7] / hz)
    raise ValueError(f"/proc/stat has no line for {name}")


def cores_used_outside(*roots: int, seconds: float = 1.0) -> list[float]:
    """For each of ``roots``: the cores that processes outside its tree (a run: its benches,
    servers and load generators) used over the next ``seconds``, all read over the same window:
    other people's load, which the load average cannot tell from ours. Linux only (/proc)."""
    before = _cpu_ticks_by_process()
    time.sleep(seconds)
    after = _cpu_ticks_by_process()
    used = {pid: ticks - before.get(pid, (0, 0))[1] for pid, (_, ticks) in after.items()}
    outside = []
    for root in roots:
        ours = _tree(root, after) | _tree(root, before)
        outside.append(
            sum(ticks for pid, ticks in used.items() if pid not in ours) / os.sysconf("SC_CLK_TCK") / seconds
        )
    return outside
