"""Driving ``wrk`` (an HTTP load generator in C) from a bench: one run, parsed into figures.

wrk is the load source because a Python client would saturate a core before the proxy does.
Needs ``wrk`` on PATH (``apt-get install -y wrk``); the caller checks and says so.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchmarks.kit.processes import pinned, tree_cpu_seconds

WRK_CONNECTIONS = 50


def many_clients_lua(clients: int) -> str:
    """A wrk script sending each request from a random one of ``clients`` clients, as a trusted
    proxy in front would report it: ``X-Forwarded-For: 10.a.b.c`` (the n-th client's address,
    seeded, so every run draws the same sequence)."""
    return f"""
math.randomseed(42)
request = function()
  local n = math.random(0, {clients - 1})
  local address = string.format("10.%d.%d.%d", math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  return wrk.format(nil, nil, {{["X-Forwarded-For"] = address}})
end
"""


@dataclass(frozen=True)
class WrkRun:
    """What one wrk run measured."""

    rps: float
    requests: int
    p50_ms: float
    p99_ms: float
    problems: str  # non-2xx answers and socket errors, as wrk reports them; "" when none


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(
    url: str, seconds: int, cpu: int | None, script: Path | None = None, connections: int = WRK_CONNECTIONS
) -> WrkRun:
    """One wrk run (``script``: a wrk Lua script shaping each request)."""
    lua = ["-s", str(script)] if script is not None else []
    command = pinned(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", *lua, url], cpu)
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=False)
    out = done.stdout
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    total = re.search(r"^\s+(\d+) requests in", out, re.M)
    if done.returncode != 0 or rps is None or total is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip() or out.strip()}")
    latency = {
        m[1]: float(m[2]) * _UNITS_MS[m[3]] for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    }
    problems = [line.strip() for line in out.splitlines() if "Non-2xx" in line or "Socket errors" in line]
    return WrkRun(
        float(rps[1]),
        int(total[1]),
        latency.get("50", float("nan")),
        latency.get("99", float("nan")),
        "; ".join(problems),
    )


def run_wrk_costed(
    url: str, seconds: int, cpu: int | None, server_pid: int, script: Path | None = None
) -> tuple[WrkRun, float]:
    """:func:`run_wrk`, and the µs of CPU the server's process tree (``server_pid``) spent per
    answer over it: on a shared machine req/s tells how much CPU the server got as much as what it
    costs; this does not."""
    before = tree_cpu_seconds(server_pid)
    run = run_wrk(url, seconds, cpu, script)
    return run, (tree_cpu_seconds(server_pid) - before) / max(run.requests, 1) * 1e6
