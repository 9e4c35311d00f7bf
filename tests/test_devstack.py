"""The dev stack leaves nothing behind: not on close, not on SIGTERM, not when its owner is killed."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from devstack.dev import Browse, engine_serves_catalog
from devstack.stack import clean_stale_workdirs
from hos_search.dev_process import NAMED_SERVERS, DevStackFailed, dev_stack

ROOT = Path(__file__).resolve().parent.parent

# A child process that starts a stack of its own (never the environment's servers), prints
# its pids and work directory, and then waits to be told to stop.
STACK_OWNER = """
import json, os, signal, sys, time
from devstack.stack import DevStack
stack = DevStack(env={k: v for k, v in os.environ.items() if k.startswith("DEV_ENGINE")})
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
try:
    stack.start()
    print(json.dumps({"pids": stack.pids(), "workdir": str(stack.workdir)}), flush=True)
    while True:
        time.sleep(0.1)
finally:
    stack.close()
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _wait_gone(pids: list[int], timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def _start_owner() -> tuple[subprocess.Popen[str], dict[str, object]]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "ELASTICSEARCH_NODE")}
    proc = subprocess.Popen([sys.executable, "-c", STACK_OWNER], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, "the stack owner exited before reporting its servers"
    return proc, json.loads(line)


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_servers_die_with_their_owner(how: str) -> None:
    proc, info = _start_owner()
    pids = info["pids"]
    assert isinstance(pids, list) and len(pids) == 3
    assert all(_alive(p) for p in pids)
    proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
    proc.wait(30)
    assert _wait_gone(pids) == []
    if how == "sigterm":  # a clean stop also removes the work directory
        assert not Path(str(info["workdir"])).exists()


def test_a_crashed_runs_work_directory_is_cleaned_at_next_start(tmp_path: Path) -> None:
    stale = tmp_path / "hos-devstack-stale"
    stale.mkdir()
    dead = subprocess.run(["true"], check=True)
    del dead
    (stale / "owner.pid").write_text("999999999")  # no such process
    (stale / "server.pids").write_text("")
    live = tmp_path / "hos-devstack-live"
    live.mkdir()
    (live / "owner.pid").write_text(str(os.getpid()))
    assert clean_stale_workdirs(tmp_path) == [stale]
    assert not stale.exists()
    assert live.exists()


def _total(proxy_url: str, query: str = "") -> int:
    with urllib.request.urlopen(f"{proxy_url}/api/search?{query}", timeout=30) as response:
        return int(json.loads(response.read())["total"])


def _eventually(check: Callable[[], bool], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for: {what}")


def _search_sees_the_catalog_and_its_changes(urls: dict[str, str]) -> None:
    """The whole pipeline: seeded rows → reindex at start → proxy; then a write → stream → proxy."""

    async def active() -> int:
        conn = await asyncpg.connect(urls["DATABASE_URL"])
        try:
            return int(await conn.fetchval("SELECT count(*) FROM products WHERE status = 'active'"))
        finally:
            await conn.close()

    async def add_product() -> None:
        conn = await asyncpg.connect(urls["DATABASE_URL"])
        try:
            await conn.execute(
                """INSERT INTO products (seller_id, name, category, fandom, price, stock, status)
                   SELECT min(id), 'Quibbler Spectrespecs Zzyzx', 'props', 'Harry Potter', 9.99, 5, 'active'
                     FROM sellers"""
            )
        finally:
            await conn.close()

    proxy = urls["PROXY_URL"]
    # Once the env file names the proxy ("ready"), the engine serves the whole seeded catalog:
    # exactly one search, no polling. Not the readiness browse's query (size=1), so no cache entry
    # of it can answer. "Ready" used to come from the Postgres fallback, 4-7 s before the engine
    # had its index (issue 20).
    with urllib.request.urlopen(f"{proxy}/api/search?size=3", timeout=30) as response:
        backend, cache = response.headers["X-Search-Backend"], response.headers["X-Cache"]
        first = json.loads(response.read())
    expected = asyncio.run(active())
    assert (backend, cache != "HIT") == ("elasticsearch", True)
    assert (first["total"], first["total_relation"]) == (expected, "eq")
    asyncio.run(add_product())
    _eventually(lambda: _total(proxy, "q=zzyzx") == 1, "a new product to become searchable")


def test_hos_search_dev_is_ready_when_the_engine_serves_the_catalog_and_stops_cleanly(tmp_path: Path) -> None:
    env_file = tmp_path / "stack.env"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "ELASTICSEARCH_NODE")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hos_search",
            "dev",
            "--products",
            "300",
            "--port",
            "0",
            "--env-file",
            str(env_file),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    try:
        deadline = time.monotonic() + 120
        while not env_file.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert env_file.exists(), f"no env file; dev printed:\n{proc.stdout.read() if proc.poll() is not None else ''}"
        urls = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
        assert {"DATABASE_URL", "REDIS_URL", "ELASTICSEARCH_NODE"} <= set(urls)
        with urllib.request.urlopen(urls["ELASTICSEARCH_NODE"], timeout=5) as response:
            assert response.status == 200
        assert "PROXY_URL" in urls
        with urllib.request.urlopen(urls["PROXY_URL"] + "/healthz", timeout=5) as response:
            assert response.status == 200
        _search_sees_the_catalog_and_its_changes(urls)
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
        pids = [int(p) for p in children.stdout.split()]
        assert len(pids) >= 3
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    assert _wait_gone(pids) == []


def test_hos_search_dev_refuses_a_taken_port_in_one_line() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "hos_search", "dev", "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "already in use" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("browse", "alias_exists", "ready"),
    [
        (Browse("postgres", 300), False, False),  # the fallback has the whole catalog at once
        (Browse("postgres", 300), True, False),  # the engine's breaker still open after the 404s
        (Browse("elasticsearch", 120), True, False),  # a partial index
        (None, True, False),
        (Browse("elasticsearch", 300), True, True),
    ],
)
def test_ready_means_the_engine_serves_the_whole_catalog(
    browse: Browse | None, alias_exists: bool, ready: bool
) -> None:
    assert engine_serves_catalog(browse, alias_exists, 300) is ready


def test_hos_search_dev_refuses_a_bad_index_name_in_one_line_before_starting_anything() -> None:
    env = {**os.environ, "SEARCH_INDEX": "Not An Alias"}
    result = subprocess.run(
        [sys.executable, "-m", "hos_search", "dev", "--port", "0"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "SEARCH_INDEX" in line and "Traceback" not in result.stderr
    assert result.stdout == ""  # no server was started: nothing printed about one


# --- hos_search.dev_process: the stack `make load` and `make relevance` start for themselves ---


def test_a_tool_gets_a_ready_dev_stack_with_the_workers_it_asked_for_and_nothing_is_left() -> None:
    env = {k: v for k, v in os.environ.items() if k not in NAMED_SERVERS}
    with dev_stack(env, products=40, workers=2) as urls:
        with urllib.request.urlopen(urls["PROXY_URL"] + "/api/search?size=1", timeout=30) as response:
            backend = response.headers["X-Search-Backend"]
            total = json.loads(response.read())["total"]
        assert backend == "elasticsearch" and total > 0  # ready: the engine serves the seeded catalog
        port = urls["PROXY_URL"].rsplit(":", 1)[1]
        pattern = f"-m proxy --host 127.0.0.1 --port {port} "
        found = subprocess.run(["pgrep", "-f", "--", pattern], capture_output=True, text=True).stdout.split()
        parents = {int(pid): _parent(int(pid)) for pid in found}  # the supervisor and its forked workers
        [supervisor] = [pid for pid, parent in parents.items() if parent not in parents]
        workers = [pid for pid, parent in parents.items() if parent == supervisor]
        assert len(workers) == 2
        pids = [_parent(supervisor), *parents]  # hos-search dev, its proxy's supervisor and workers
    assert _wait_gone(pids) == []


def test_a_dev_stack_that_cannot_start_is_one_error_not_a_wait() -> None:
    # Seen as the child's exit, not as the wait running out (that message differs).
    failing = dev_stack({**os.environ, "SEARCH_INDEX": "Not An Alias"}, products=1, ready_within_s=60)
    with pytest.raises(DevStackFailed, match="exited with status 2 before it was ready"), failing:
        pass
