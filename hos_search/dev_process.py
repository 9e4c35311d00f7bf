"""``hos-search dev`` as a child process, for the tools that need a stack of their own.

``make load`` and ``make relevance`` start one when no server is named. They run the command
line (``python -m hos_search dev``) rather than import ``devstack``: the layout lets nothing but
that command, the benchmarks and the tests import the dev stack (ARCHITECTURE.md). The child
writes its env file once the engine serves the whole seeded catalog ("ready"), so the file's
appearance is the one readiness signal; the child stops everything it started on SIGTERM.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from catalog.processes import stop_process

ROOT = Path(__file__).resolve().parent.parent
# Seeding, indexing and the engine's start take well under this on two cores (tests/test_devstack.py).
READY_WITHIN_S = 600.0
# The child stops its proxy (whose supervisor waits up to 30 s for its workers), the indexer,
# then the servers.
STOP_WITHIN_S = 90.0
# The servers ``hos-search dev`` uses instead of starting embedded ones when the environment names them.
NAMED_SERVERS = ("DATABASE_URL", "REDIS_URL", "ELASTICSEARCH_NODE")


class DevStackFailed(RuntimeError):
    """``hos-search dev`` exited, or did not get ready in time, before writing its env file."""


def dev_command(products: int, workers: int, env_file: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hos_search",
        "dev",
        "--port",
        "0",
        "--products",
        str(products),
        "--workers",
        str(workers),
        "--env-file",
        str(env_file),
    ]


def read_env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text(encoding="utf-8").splitlines() if "=" in line)


@contextmanager
def dev_stack(
    env: Mapping[str, str], *, products: int, workers: int = 1, ready_within_s: float = READY_WITHIN_S
) -> Iterator[dict[str, str]]:
    """A ready ``hos-search dev`` (its proxy and indexer get ``env``): the URLs its env file names
    (``DATABASE_URL``, ``REDIS_URL``, ``ELASTICSEARCH_NODE``, ``PROXY_URL``). Stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="hos-dev-") as workdir:
        env_file = Path(workdir) / "stack.env"
        proc = subprocess.Popen(dev_command(products, workers, env_file), cwd=ROOT, env=dict(env))
        try:
            deadline = time.monotonic() + ready_within_s
            while not env_file.exists():
                if proc.poll() is not None:
                    raise DevStackFailed(f"hos-search dev exited with status {proc.returncode} before it was ready")
                if time.monotonic() > deadline:
                    raise DevStackFailed(f"hos-search dev was not ready within {ready_within_s:.0f} s")
                time.sleep(0.2)
            yield read_env_file(env_file)
        finally:
            stop_process(proc, STOP_WITHIN_S)
