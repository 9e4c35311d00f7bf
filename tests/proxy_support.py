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
from typing import Any

import redis.asyncio as aioredis
from aiohttp import ClientSession, TCPConnector, web
from aiohttp.test_utils import TestClient, TestServer
from elasticsearch import AsyncElasticsearch

from catalog.processes import stop_process
from catalog.redis_client import node_urls
from devstack.servers import free_port
from devstack.stack import StackUrls
from proxy.app import create_app
from proxy.cache.keys import fills_channel
from proxy.fastpath import install
from proxy.settings import ProxySettings
from proxy.state import CACHE, METRICS, TAXONOMY
from proxy.taxonomy import Taxonomy
from tests.conftest import SearchCatalog, proxy_settings
from tests.indexer_support import EngineFront, engine_front, eventually


def proxy_env(catalog: SearchCatalog, urls: StackUrls, **extra: str) -> dict[str, str]:
    """The environment of a proxy process serving the shared search catalog."""
    return {
        **os.environ,
        "ELASTICSEARCH_NODE": urls.elasticsearch_node,
        "SEARCH_INDEX": catalog.alias,
        "DATABASE_URL": catalog.database_url,
        "REDIS_URL": urls.redis_url,
        "REDIS_CLUSTER": str(urls.redis_cluster).lower(),
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
        await asyncio.to_thread(stop_process, proc, 15)


async def following(client: TestClient) -> None:
    """Wait until the in-process proxy behind ``client`` follows the catalog generation
    (before that its cache is blind, and a second request may not be a HIT)."""
    view = client.app[CACHE].view

    async def follows() -> bool:
        return view.following

    await eventually(follows, timeout=10, what="the cache following the catalog generation")


@contextlib.asynccontextmanager
async def fast_path_proxy(settings: ProxySettings) -> AsyncIterator[TestClient]:
    """An in-process proxy with the fast path in front, as ``python -m proxy`` runs it, once its
    cache follows the catalog."""
    async with TestClient(TestServer(create_app(settings))) as client:
        runner = client.server.runner
        assert isinstance(runner, web.AppRunner)  # TestServer's runner, typed as BaseTestServer's BaseRunner
        install(runner)
        await following(client)
        yield client


@contextlib.asynccontextmanager
async def proxy_behind_front(catalog: SearchCatalog, urls: StackUrls) -> AsyncIterator[tuple[TestClient, EngineFront]]:
    """An in-process proxy, cache off, whose engine requests pass an engine front that records them."""
    async with engine_front(urls.elasticsearch_node) as front:
        settings = proxy_settings(catalog, urls, elasticsearch_node=front.url, cache_enabled=False)
        async with TestClient(TestServer(create_app(settings))) as client:
            yield client, front


async def held_taxonomy(client: TestClient, timeout: float = 30) -> Taxonomy:
    """The suggestions' vocabulary the in-process proxy holds, once it has read it."""
    holder = client.app[TAXONOMY]

    async def held() -> Taxonomy | None:
        return holder.current

    return await eventually(held, timeout=timeout, what="the proxy holding the suggestions' vocabulary")


def metric(client: TestClient, name: str, **labels: str) -> float:
    """A sample of the in-process proxy's metrics, the fast path's batched counts included."""
    metrics = client.app[METRICS]
    metrics.flush()
    return metrics.registry.get_sample_value(name, labels) or 0.0


def scraped(text: str, sample: str) -> float:
    """The sum of ``sample`` (a name with its labels as exposed, e.g. ``x_total{route="search"}``)
    over a proxy process's ``/metrics`` text: every worker's lines, 0 when there are none."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(sample))


# The freshness promise: a committed change is visible through the proxy within this.
VISIBLE_WITHIN_S = 2.0


async def visible_after(client: TestClient, path: str, check: Any, started: float) -> float:
    """Seconds from ``started`` until ``check(status, body)`` holds for ``path``."""
    deadline = started + 10
    while True:
        response = await client.get(path)
        body = await response.json()
        if check(response.status, body):
            return time.monotonic() - started
        assert time.monotonic() < deadline, f"{path} still shows {body}"
        await asyncio.sleep(0.02)


async def engine_searches(engine: AsyncElasticsearch, index: str) -> int:
    """The engine's own count of searches on ``index`` (0 on an engine that keeps none: osmem)."""
    stats = await engine.indices.stats(index=index, metric="search")
    return int(stats["indices"][index]["primaries"]["search"]["query_total"])


async def proxy_searches(session: ClientSession) -> float:
    """Engine searches the proxy made, summed over its workers (``/metrics`` aggregates them)."""
    async with session.get("/metrics") as response:
        text = await response.text()
    return scraped(text, 'search_proxy_backend_duration_seconds_count{backend="elasticsearch",operation="search"}')


async def fill_notice_subscribers(redis_url: str, channel: str) -> int:
    """Subscribers to ``channel`` on every node ``redis_url`` lists (a cluster's workers may
    each listen on any node; a classic PUBLISH reaches them all)."""
    total = 0
    for node in node_urls(redis_url):
        async with aioredis.from_url(node) as redis:
            total += int(dict(await redis.pubsub_numsub(channel)).get(channel.encode(), 0))
    return total


async def one_engine_search_for_a_hundred_cold_requests(
    catalog: SearchCatalog, urls: StackUrls, engine: AsyncElasticsearch
) -> None:
    """100 identical cold requests over a two-worker proxy process make one engine search."""
    # Generous Redis timeout and lock wait: on a loaded machine Redis may take over 50 ms and
    # the engine over a second, and the cache would rightly skip Redis or stop waiting and ask
    # the engine itself. This is about coalescing, not about those bounds.
    env = proxy_env(catalog, urls, CACHE_LOCK_WAIT_MS="8000", REDIS_TIMEOUT_MS="1000")
    proc, url = spawn_proxy(env, workers=2)
    try:
        await wait_healthy(url, proc)
        # Both workers subscribed to the fill notices (they travel by pub/sub): polled, not slept.
        channel = fills_channel(env["REDIS_KEY_PREFIX"])
        deadline = time.monotonic() + 30
        while await fill_notice_subscribers(urls.redis_url, channel) < 2:
            assert time.monotonic() < deadline, "the two workers did not subscribe to the fill notices"
            await asyncio.sleep(0.05)
        path = f"/api/search?q=wand&min_price={time.time() % 97:.2f}"  # never asked before
        engine_before = await engine_searches(engine, catalog.index)
        # One connection per request: SO_REUSEPORT spreads connections, so both workers get some.
        connector = TCPConnector(limit=0, force_close=True)
        async with ClientSession(url, connector=connector) as session:
            proxy_before = await proxy_searches(session)

            async def one() -> bytes:
                async with session.get(path) as response:
                    assert response.status == 200
                    return await response.read()

            bodies = await asyncio.gather(*(one() for _ in range(100)))
            assert len(set(bodies)) == 1
            assert await proxy_searches(session) - proxy_before == 1
        searched = await engine_searches(engine, catalog.index) - engine_before
        # The engine's own count agrees, where it keeps one (OpenSearch does; osmem reports 0).
        assert searched in ({1} if engine_before or searched else {0})
    finally:
        await asyncio.to_thread(stop_process, proc, 30)


async def timed_get(client: TestClient, path: str) -> tuple[int, dict[str, str], Any, float]:
    """GET ``path``: the status, headers, JSON body (problem+json too) and seconds it took."""
    started = time.monotonic()
    response = await client.get(path)
    body = await response.json(content_type=None)
    return response.status, dict(response.headers), body, time.monotonic() - started
