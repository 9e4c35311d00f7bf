"""``hos-search``: global options work with every command, before or after the command word.

These run the real command line in a child process. The proxy is pointed at addresses where
nothing listens: it starts degraded (engine down, Redis and Postgres connected lazily), which
is all a command-line test needs, and needs no dev stack.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from devstack.servers import free_port

ROOT = Path(__file__).resolve().parent.parent


def _nowhere_env() -> dict[str, str]:
    return {
        **os.environ,
        "ELASTICSEARCH_NODE": f"http://127.0.0.1:{free_port()}",
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}",
        "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere",
        # The option must override the variable: at "error", the proxy's INFO lines would not show.
        "LOG_LEVEL": "error",
        "LOG_FORMAT": "text",
    }


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hos_search", *args],
        cwd=ROOT,
        env=env or _nowhere_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _wait_healthy(url: str, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode}: {proc.communicate()[1]}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("the proxy did not become healthy")


@pytest.mark.parametrize(
    "where",
    ["before the command", "after the command"],
)
def test_log_level_works_before_or_after_the_proxy_command(where: str) -> None:
    port = free_port()
    proxy_args = ["proxy", "--port", str(port), "--workers", "1"]
    args = (
        ["--log-level", "debug", *proxy_args]
        if where == "before the command"
        else [*proxy_args, "--log-level", "debug"]
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "hos_search", *args],
        cwd=ROOT,
        env=_nowhere_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_healthy(f"http://127.0.0.1:{port}", proc)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr and "AssertionError" not in stderr, stderr
    # Debug level reached the proxy, over LOG_LEVEL=error: its INFO start-up line is logged.
    assert "INFO hos_search.proxy proxy ready" in stderr, stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--log-level", "nonsense", "proxy", "--port", "1"],
        ["proxy", "--port", "1", "--log-level", "nonsense"],
        ["--log-level", "nonsense", "migrate"],
        ["migrate", "--log-level", "nonsense"],
        ["--log-level", "nonsense", "indexer"],
        ["seed", "--products", "1", "--log-level", "nonsense"],
    ],
    ids=" ".join,
)
def test_a_bad_log_level_is_one_line_naming_the_option(args: list[str]) -> None:
    result = _cli(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "--log-level" in line and "nonsense" in line


def test_a_log_level_is_not_mistaken_for_a_services_own_option() -> None:
    """What follows a service's command word is still its own: its --help, its errors."""
    result = _cli("--log-level", "info", "proxy", "--help")
    assert result.returncode == 0
    assert "--workers" in result.stdout
    result = _cli("proxy", "--log-level", "info", "--port", "99999")
    assert result.returncode == 2
    assert result.stderr.strip() == "hos-search proxy: --port 99999 is not a TCP port"


def test_unknown_options_of_a_built_in_command_are_one_line() -> None:
    result = _cli("migrate", "--bogus")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "--bogus" in line


@pytest.mark.parametrize("command", ["proxy", "indexer", "reindex"])
def test_unknown_options_of_a_service_are_one_line(command: str) -> None:
    # argparse printed the usage and then the error: two lines where one is promised.
    result = _cli(command, "--bogus")
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"hos-search {command}: error:") and "--bogus" in line


def test_reindex_help_shows_the_reindex_not_the_streaming_indexer() -> None:
    result = _cli("reindex", "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: hos-search reindex")
    assert "--reindex-on-start" not in result.stdout and "stream" not in result.stdout
