"""``catalog.processes.stop_process``: the one way a child is stopped, tried on real processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Any

from catalog.processes import stop_process, stop_processes
from devstack.servers import child_setup

# A child that says it is ready once its handlers are in place, so the signal cannot beat them.
_IGNORES_TERM = (
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(600)\n"
)
_EXITS_ON_TERM = "import time\nprint('ready', flush=True)\ntime.sleep(600)\n"
# A parent in its own group that starts a grandchild and then waits for it.
_PARENT = (
    "import subprocess, sys\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
    "print(child.pid, flush=True)\n"
    "child.wait()\n"
)


def _start(code: str, **kwargs: Any) -> tuple[subprocess.Popen[str], str]:
    """The child, and the first line it printed (once it is ready)."""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, **kwargs)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_process_that_exits_on_sigterm_is_not_killed() -> None:
    proc, _ = _start(_EXITS_ON_TERM)
    stop_process(proc, 30)
    assert proc.returncode == -signal.SIGTERM


def test_a_process_that_ignores_sigterm_is_killed_after_the_timeout() -> None:
    proc, _ = _start(_IGNORES_TERM)
    killed: list[int] = []
    stop_processes([proc], 0.5, on_kill=lambda p: killed.append(p.pid))
    assert proc.returncode == -signal.SIGKILL
    assert killed == [proc.pid]


def test_a_paused_process_is_woken_to_act_on_the_stop_signal() -> None:
    proc, _ = _start(_EXITS_ON_TERM)
    proc.send_signal(signal.SIGSTOP)
    stop_process(proc, 30)
    assert proc.returncode == -signal.SIGTERM


def test_group_stops_the_children_a_process_started() -> None:
    proc, pid = _start(_PARENT, preexec_fn=child_setup(signal.SIGTERM))
    grandchild = int(pid)
    assert _alive(grandchild)
    stop_process(proc, 30, group=True)
    deadline = time.monotonic() + 10  # the grandchild is not ours to reap: init does, soon
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_an_exited_process_is_only_reaped() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    stop_process(proc, 0.1)
    assert proc.returncode == 0
