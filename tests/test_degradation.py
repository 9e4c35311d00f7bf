"""Search when the engine is down, hanging or overloaded: the breaker, shedding and the Postgres
fallback, through a real proxy over real Postgres and a real engine behind a faultable TCP proxy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from catalog.processes import stop_process
from devstack.servers import free_port
from devstack.stack import StackUrls
from proxy.app import create_app
from proxy.state import ENGINE_GUARD, TAXONOMY
from tests.conftest import SearchCatalog, proxy_settings
from tests.indexer_support import TcpProxy
from tests.proxy_support import held_taxonomy, metric, proxy_env, scraped, spawn_proxy, timed_get, wait_healthy

FALLBACK_APP = "hos-search-fallback"
SEARCH = "/api/search?q=harry+potter&size=5"


def _settings(catalog: SearchCatalog, urls: StackUrls, engine_url: str, **overrides: Any) -> Any:
    base: dict[str, Any] = {
        "elasticsearch_node": engine_url,
        "engine_timeout_ms": 1_000,
        "engine_breaker_failures": 3,
        "engine_breaker_cooldown_ms": 500,
        # Answers must come from a backend each time, not from an earlier answer; /readyz too.
        "cache_enabled": False,
        "readyz_cache_ms": 0,
    }
    return proxy_settings(catalog, urls, **{**base, **overrides})


@pytest.fixture
async def engine_cut(stack_urls: StackUrls) -> AsyncIterator[TcpProxy]:
    cut = TcpProxy(stack_urls.elasticsearch_node)
    await cut.open()
    try:
        yield cut
    finally:
        await cut.close()


async def test_with_the_engine_refusing_search_and_suggestions_answer_from_postgres(
    search_catalog: SearchCatalog, stack_urls: StackUrls
) -> None:
    refused = f"http://127.0.0.1:{free_port()}"
    async with TestClient(TestServer(create_app(_settings(search_catalog, stack_urls, refused)))) as client:
        status, headers, body, _ = await timed_get(client, SEARCH)
        assert status == 200, body
        assert headers["X-Search-Backend"] == "postgres" and headers["X-Cache"] == "BYPASS"
        assert body["total"] > 0 and body["items"]
        assert all("harry" in item["name"].lower() or "potter" in item["name"].lower() for item in body["items"])
        assert {"query", "total", "items", "facets", "page", "pages", "relaxed"} <= set(body)

        status, headers, body, _ = await timed_get(client, "/api/search/suggestions?q=hary")
        assert status == 200 and headers["X-Search-Backend"] == "postgres"
        assert any("Harry Potter" in s["text"] for s in body["suggestions"]), body

        status, _, body, _ = await timed_get(client, "/api/search?q=hary+poter&size=5")
        assert status == 200 and body["items"], body  # typos still find Harry Potter
        assert any("harry" in item["name"].lower() for item in body["items"])

        status, _, ready, _ = await timed_get(client, "/readyz")
        assert status == 200 and ready["status"] == "degraded" and ready["backend"] == "postgres"
        assert ready["checks"]["elasticsearch"]["ok"] is False


async def test_a_proxy_started_with_the_engine_down_reads_the_suggestions_vocabulary_once_it_is_back(
    search_catalog: SearchCatalog, stack_urls: StackUrls, engine_cut: TcpProxy
) -> None:
    await engine_cut.close()
    async with TestClient(TestServer(create_app(_settings(search_catalog, stack_urls, engine_cut.url)))) as client:
        holder = client.app[TAXONOMY]
        status, headers, body, _ = await timed_get(client, "/api/search/suggestions?q=pokmon")
        assert status == 200 and headers["X-Search-Backend"] == "postgres"
        assert holder.current is None
        await engine_cut.open()
        await held_taxonomy(client)  # retried every second until the first read
        status, headers, from_engine, _ = await timed_get(client, "/api/search/suggestions?q=pokmon")
        assert status == 200 and headers["X-Search-Backend"] == "elasticsearch"
        assert from_engine["suggestions"][0] == body["suggestions"][0] == {"text": "Pokémon", "type": "fandom"}


async def test_the_fallback_answers_as_the_engine_does(
    search_catalog: SearchCatalog, stack_urls: StackUrls, engine_cut: TcpProxy
) -> None:
    """Same parameters, same validation, same shape; the same products for a filter-only query."""
    path = "/api/search?category=figures&sort=price_asc&size=10&page=2"
    async with TestClient(TestServer(create_app(_settings(search_catalog, stack_urls, engine_cut.url)))) as client:
        status, headers, engine_body, _ = await timed_get(client, path)
        assert status == 200 and headers["X-Search-Backend"] == "elasticsearch"
        await engine_cut.close()
        status, headers, fallback_body, _ = await timed_get(client, path)
        assert status == 200 and headers["X-Search-Backend"] == "postgres"
        for field in ("total", "page", "pages", "size"):
            assert fallback_body[field] == engine_body[field], field
        assert [i["id"] for i in fallback_body["items"]] == [i["id"] for i in engine_body["items"]]
        assert fallback_body["facets"] == engine_body["facets"]
        bad, headers, problem, _ = await timed_get(client, "/api/search?size=0")
        assert bad == 400 and problem["invalid_params"][0]["name"] == "size"


async def test_cut_off_mid_run_the_breaker_opens_and_traffic_returns_when_the_engine_does(
    search_catalog: SearchCatalog, stack_urls: StackUrls, engine_cut: TcpProxy
) -> None:
    async with TestClient(TestServer(create_app(_settings(search_catalog, stack_urls, engine_cut.url)))) as client:
        guard = client.app[ENGINE_GUARD]
        assert (await timed_get(client, SEARCH))[1]["X-Search-Backend"] == "elasticsearch"
        await engine_cut.close()
        backends = []
        for _ in range(6):
            status, headers, _, _ = await timed_get(client, SEARCH)
            assert status == 200
            backends.append(headers["X-Search-Backend"])
        assert backends == ["postgres"] * 6
        assert guard.breaker.state == "open"  # three failures in a row
        status, _, ready, _ = await timed_get(client, "/readyz")
        assert status == 200 and ready["engine_breaker"] == "open" and ready["backend"] == "postgres"

        await engine_cut.open()  # the same port: the engine is back
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status, headers, _, _ = await timed_get(client, SEARCH)
            if headers["X-Search-Backend"] == "elasticsearch":
                break
            await asyncio.sleep(0.1)
        assert headers["X-Search-Backend"] == "elasticsearch"
        assert guard.breaker.state == "closed"
        status, _, ready, _ = await timed_get(client, "/readyz")
        assert status == 200 and ready["status"] == "ready" and ready["backend"] == "elasticsearch"


async def _engine_counts(session: aiohttp.ClientSession, url: str) -> tuple[float, float]:
    """Searches a proxy process asked the engine (answered or failed), and engine requests it skipped."""
    async with session.get(f"{url}/metrics") as response:
        text = await response.text()
    labels = '{backend="elasticsearch",operation="search"}'
    asked = scraped(text, f"search_proxy_backend_duration_seconds_count{labels}") + scraped(
        text, f"search_proxy_backend_errors_total{labels}"
    )
    return asked, scraped(text, "search_proxy_engine_skipped_total{")


async def test_against_a_hanging_engine_400_concurrent_searches_do_not_each_wait_the_timeout(
    search_catalog: SearchCatalog, stack_urls: StackUrls, engine_cut: TcpProxy
) -> None:
    """In a proxy process of its own (one worker), so the test's client does not share its CPU."""
    env = proxy_env(
        search_catalog,
        stack_urls,
        ELASTICSEARCH_NODE=engine_cut.url,
        ENGINE_TIMEOUT_MS="3000",
        ENGINE_MAX_IN_FLIGHT="8",
        ENGINE_QUEUE_MS="20",
        FALLBACK_MAX_CONCURRENCY="4",
        FALLBACK_QUEUE_MS="20",
        CACHE_ENABLED="false",
        LOG_LEVEL="error",
    )
    proc, url = spawn_proxy(env, workers=1)
    try:
        await wait_healthy(url, proc)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            async with session.get(url + SEARCH) as response:
                assert response.headers["X-Search-Backend"] == "elasticsearch"
            engine_cut.hanging = True

            async def one(i: int) -> tuple[int, str | None]:
                # Distinct requests: nothing is shared by single-flight.
                async with session.get(f"{url}/api/search?q=wand&size={1 + i % 100}&page={1 + i // 100}") as r:
                    await r.read()
                    return r.status, r.headers.get("Retry-After")

            before = await _engine_counts(session, url)
            results = await asyncio.gather(*(one(i) for i in range(400)))
            asked, skipped = (
                after - was for after, was in zip(await _engine_counts(session, url), before, strict=True)
            )
        statuses = [status for status, _ in results]
        assert set(statuses) <= {200, 503}, set(statuses)
        assert statuses.count(200) > 0
        assert all(retry == "1" for status, retry in results if status == 503)
        # Counted, not timed (a wall-clock window failed on busy machines): only the requests
        # holding one of the 8 engine slots — and at most the breaker's 2 probes after it opened —
        # asked the hanging engine and waited out its timeout; every other one skipped it and
        # was answered or refused at once. Without the guard all 400 would queue in the engine
        # client's pool.
        assert 1 <= asked <= 8 + 2, (asked, skipped)
        assert asked + skipped == 400, (asked, skipped)
    finally:
        engine_cut.hanging = False
        await asyncio.to_thread(stop_process, proc, 30)


async def test_over_the_fallback_cap_requests_get_a_quick_503_and_postgres_is_unharmed(
    search_catalog: SearchCatalog, stack_urls: StackUrls
) -> None:
    refused = f"http://127.0.0.1:{free_port()}"
    settings = _settings(
        search_catalog,
        stack_urls,
        refused,
        fallback_pool_size=2,
        fallback_max_concurrency=2,
        fallback_queue_ms=10,
    )
    admin = await asyncpg.connect(search_catalog.database_url)
    try:
        async with TestClient(TestServer(create_app(settings))) as client:
            peak = 0
            watching = True

            async def watch() -> None:
                nonlocal peak
                while watching:
                    count = await admin.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", FALLBACK_APP
                    )
                    peak = max(peak, count)
                    await asyncio.sleep(0.005)

            watcher = asyncio.ensure_future(watch())
            results = await asyncio.gather(*(timed_get(client, f"/api/search?q=wand&size={1 + i}") for i in range(60)))
            watching = False
            await watcher
            refused_answers = [r for r in results if r[0] == 503]
            assert refused_answers, "60 concurrent fallback searches over a cap of 2: some must be refused"
            assert [r for r in results if r[0] == 200], "and some answered"
            # Refused at once rather than after a wait on Postgres: the refusals are counted as the
            # cap's (search_proxy_fallback_rejected_total), not as fallback queries that failed.
            rejected = metric(client, "search_proxy_fallback_rejected_total")
            assert rejected == len(refused_answers), (rejected, len(refused_answers))
            for _, headers, body, _ in refused_answers:
                assert headers["Retry-After"] == "1"
                assert headers["Content-Type"].startswith("application/problem+json")
                assert body["status"] == 503
            assert peak <= 2, peak  # the fallback's own pool, never more
            assert await admin.fetchval("SELECT 1") == 1
    finally:
        await admin.close()


async def test_with_neither_backend_the_proxy_is_unavailable(
    search_catalog: SearchCatalog, stack_urls: StackUrls
) -> None:
    refused = f"http://127.0.0.1:{free_port()}"
    no_database = f"postgresql://nobody@127.0.0.1:{free_port()}/none"
    settings = _settings(search_catalog, stack_urls, refused, database_url=no_database)
    async with TestClient(TestServer(create_app(settings))) as client:
        async with asyncio.timeout(15):  # a deadline, not a window: refused at once, never hanging
            status, headers, body, _ = await timed_get(client, SEARCH)
        assert status == 503 and headers["Retry-After"] == "1" and body["status"] == 503
        status, _, ready, _ = await timed_get(client, "/readyz")
        assert status == 503 and ready["status"] == "unavailable" and ready["backend"] is None
    settings = _settings(search_catalog, stack_urls, refused, fallback_enabled=False)
    async with TestClient(TestServer(create_app(settings))) as client:
        assert (await timed_get(client, SEARCH))[0] == 503
        status, _, ready, _ = await timed_get(client, "/readyz")
        assert status == 503 and ready["status"] == "unavailable"
