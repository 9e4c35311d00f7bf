"""Stopping child processes: the stop signal, a bounded wait, then SIGKILL — one way, everywhere.

Used by the proxy's supervisor for its workers, and (through ``devstack.servers``) by the
embedded servers, the dev command, benchmarks, the load runner and the tests. Pure process
handling: never imports a service.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any


def stop_processes(
    procs: Sequence[subprocess.Popen[Any]],
    timeout: float = 15.0,
    *,
    stop_signal: int = signal.SIGTERM,
    group: bool = False,
    on_kill: Callable[[subprocess.Popen[Any]], None] | None = None,
) -> None:
    """Stop every process in ``procs``: the stop signal to all at once, then wait for each.

    One that is still alive ``timeout`` seconds after the signal is sent SIGKILL (``on_kill`` is told
    first) and reaped. ``group``: signal each one's process group instead (it leads one when started
    with :func:`child_setup`), so the children it started stop with it. Already-exited processes are
    only reaped. The one way this project stops a child process: servers, benches, load runs, tests.
    """
    deadline = time.monotonic() + timeout
    for proc in procs:
        if proc.poll() is None:
            _signal(proc, signal.SIGCONT, group)  # a paused (SIGSTOPped) process cannot act on the stop signal
            _signal(proc, stop_signal, group)
    for proc in procs:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            if on_kill is not None:
                on_kill(proc)
            _signal(proc, signal.SIGKILL, group)
            proc.wait()


def stop_process(
    proc: subprocess.Popen[Any], timeout: float = 15.0, *, stop_signal: int = signal.SIGTERM, group: bool = False
) -> None:
    """Stop one process: the stop signal, ``timeout`` seconds to exit, then SIGKILL (see :func:`stop_processes`)."""
    stop_processes([proc], timeout, stop_signal=stop_signal, group=group)


def _signal(proc: subprocess.Popen[Any], signum: int, group: bool) -> None:
    try:
        if group:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
    except ProcessLookupError:  # it exited (and, for a group, so did every member) since we looked
        pass
