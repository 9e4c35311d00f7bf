"""What tests of the proxy share: a real process's environment and start-up wait, the wait for
an in-process proxy's cache to follow the catalog generation, an in-process proxy with the fast
path in front, and its metrics."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer

from devstack.servers import free_port
from devstack.stack import StackUrls
from proxy.app import create_app
from proxy.fastpath import install
from proxy.settings import ProxySettings
from proxy.state import CACHE, METRICS
from tests.conftest import SearchCatalog
from tests.indexer_support import eventually


def proxy_env(catalog: SearchCatalog, urls: StackUrls, **extra: str) -> dict[str, str]:
    """The environment of a proxy process serving the shared search catalog."""
    return {
        **os.environ,
        "ELASTICSEARCH_NODE": urls.elasticsearch_node,
        "SEARCH_INDEX": catalog.alias,
        "DATABASE_URL": catalog.database_url,
        "REDIS_URL": urls.redis_url,
        "LOG_LEVEL": "warning",
        # Each proxy its own cache: answers cached by one test never reach another.
        "REDIS_KEY_PREFIX": f"t{uuid.uuid4().hex[:10]}:",
        # Tests send many requests from one address; the limiter's tests turn it on.
        "RATE_LIMIT_ENABLED": "false",
        **extra,
    }


ROOT = Path(__file__).resolve().parent.parent


def spawn_proxy(env: dict[str, str], *, workers: int) -> tuple[subprocess.Popen[str], str]:
    """``python -m proxy`` on a free loopback port, stderr piped: the process and its URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", "--port", str(port), "--workers", str(workers)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, f"http://127.0.0.1:{port}"


async def wait_healthy(url: str, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    """Wait until ``url``/healthz answers 200, failing at once if the process exits."""
    deadline = time.monotonic() + timeout
    async with ClientSession() as session:
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                async with session.get(url + "/healthz") as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("proxy did not become healthy")


@contextlib.asynccontextmanager
async def running_proxy(env: dict[str, str], *, workers: int = 1) -> AsyncIterator[tuple[subprocess.Popen[str], str]]:
    """A healthy ``python -m proxy`` process (:func:`spawn_proxy`), terminated on the way out."""
    proc, url = spawn_proxy(env, workers=workers)
    try:
        await wait_healthy(url, proc)
        yield proc, url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def following(client: TestClient) -> None:
    """Wait until the in-process proxy behind ``client`` follows the catalog generation
    (before that its cache is blind, and a second request may not be a HIT)."""
    view = client.server.app[CACHE].view

    async def follows() -> bool:
        return view.following

    await eventually(follows, timeout=10, what="the cache following the catalog generation")


@contextlib.asynccontextmanager
async def fast_path_proxy(settings: ProxySettings) -> AsyncIterator[TestClient]:
    """An in-process proxy with the fast path in front, as ``python -m proxy`` runs it, once its
    cache follows the catalog."""
    async with TestClient(TestServer(create_app(settings))) as client:
        assert client.server.runner is not None
        install(client.server.runner)
        await following(client)
        yield client


def metric(client: TestClient, name: str, **labels: str) -> float:
    """A sample of the in-process proxy's metrics, the fast path's batched counts included."""
    metrics = client.server.app[METRICS]
    metrics.flush()
    return metrics.registry.get_sample_value(name, labels) or 0.0


def scraped(text: str, sample: str) -> float:
    """The sum of ``sample`` (a name with its labels as exposed, e.g. ``x_total{route="search"}``)
    over a proxy process's ``/metrics`` text: every worker's lines, 0 when there are none."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(sample))
