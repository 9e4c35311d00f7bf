"""The fast path answers an L1 hit exactly as the application would: bytes, headers, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from devstack.stack import StackUrls
from proxy.app import create_app
from proxy.fastpath import fast_path
from tests.conftest import SearchCatalog, proxy_settings
from tests.proxy_support import fast_path_proxy, following, metric, scraped

# Headers whose values differ between any two responses.
_PER_RESPONSE = {"Date", "X-Request-ID"}


@pytest_asyncio.fixture(loop_scope="session")
async def client(search_catalog: SearchCatalog, stack_urls: StackUrls) -> AsyncIterator[TestClient]:
    async with fast_path_proxy(proxy_settings(search_catalog, stack_urls)) as client:
        yield client


_sample = metric


async def test_a_hit_on_the_fast_path_is_the_hit_the_application_gives(client: TestClient) -> None:
    fast_spelling = "/api/search?q=wand&fandom=Harry%20Potter"
    # The same request spelled differently: not yet in the memo, so the application answers it.
    app_spelling = "/api/search?fandom=Harry%20Potter&q=wand&utm_source=x"
    first = await client.get(fast_spelling)
    assert first.headers["X-Cache"] == "MISS"
    requests_before = _sample(client, "search_proxy_requests_total", route="/api/search", method="GET", status="2xx")
    hits_before = _sample(client, "search_proxy_cache_responses_total", route="search", cache="hit")
    lookups_before = _sample(client, "search_proxy_cache_lookups_total", route="search", tier="l1", result="hit")
    durations_before = await _durations(client)

    through_app = await client.get(app_spelling)
    fast = await client.get(fast_spelling, headers={"X-Request-ID": "trace-me-123"})
    assert through_app.headers["X-Cache"] == fast.headers["X-Cache"] == "HIT"
    assert await fast.read() == await through_app.read()
    assert {k: v for k, v in fast.headers.items() if k not in _PER_RESPONSE} == {
        k: v for k, v in through_app.headers.items() if k not in _PER_RESPONSE
    }
    assert fast.headers["X-Request-ID"] == "trace-me-123"
    assert through_app.headers["X-Request-ID"] != fast.headers["X-Request-ID"]
    after = _sample(client, "search_proxy_requests_total", route="/api/search", method="GET", status="2xx")
    assert after - requests_before == 2
    assert _sample(client, "search_proxy_cache_responses_total", route="search", cache="hit") - hits_before == 2
    lookups = _sample(client, "search_proxy_cache_lookups_total", route="search", tier="l1", result="hit")
    assert lookups - lookups_before == 2
    # Both answers timed, in the exposition a scrape reads (proxy.metrics.RouteDurations).
    count, total, fastest = (
        after - before for after, before in zip(await _durations(client), durations_before, strict=True)
    )
    assert count == fastest == 2 and 0 < total < 1


async def _durations(client: TestClient) -> tuple[float, float, float]:
    """/metrics' search durations: their count, their sum, and how many took at most 1 s."""
    text = await (await client.get("/metrics")).text()
    family = "search_proxy_request_duration_seconds_"
    return (
        scraped(text, family + 'count{route="/api/search"}'),
        scraped(text, family + 'sum{route="/api/search"}'),
        scraped(text, family + 'bucket{le="1.0",route="/api/search"}'),
    )


async def test_what_the_fast_path_cannot_answer_reaches_the_application(client: TestClient) -> None:
    await client.get("/api/search/suggestions?q=harr")
    cors = await client.get("/api/search/suggestions?q=harr", headers={"Origin": "https://shop.example"})
    assert cors.headers["X-Cache"] == "HIT"
    assert cors.headers["Access-Control-Allow-Origin"] == "https://shop.example"  # the middleware ran
    bad = await client.get("/api/search?size=0")
    assert bad.status == 400 and bad.content_type == "application/problem+json"
    again = await client.get("/api/search?size=0")  # an invalid query string is never remembered
    assert again.status == 400
    head = await client.head("/api/search/suggestions?q=harr")
    assert head.status == 200


async def test_a_known_hit_is_answered_before_the_application_and_other_spellings_reach_it(
    search_catalog: SearchCatalog, stack_urls: StackUrls
) -> None:
    reached: list[str] = []  # the request targets the application answered
    async with TestClient(TestServer(create_app(proxy_settings(search_catalog, stack_urls)))) as client:
        runner = client.server.runner
        assert isinstance(runner, web.AppRunner) and runner.server is not None
        server = runner.server
        application = server.request_handler

        async def counted(request: web.BaseRequest) -> web.StreamResponse:
            reached.append(request.raw_path)
            return await application(request)

        server.request_handler = fast_path(client.app, counted)
        await following(client)
        first = await client.get("/api/search?q=potion")
        hit = await client.get("/api/search?q=potion")
        # The same route with its path percent-encoded: the fast path reads the target as sent
        # (proxy.fastpath: not the decoded path), so the application answers it, from its cache.
        encoded = await client.get(URL("/api/%73earch?q=potion", encoded=True))
        assert [first.headers["X-Cache"], hit.headers["X-Cache"], encoded.headers["X-Cache"]] == ["MISS", "HIT", "HIT"]
        assert await hit.read() == await encoded.read() == await first.read()
        assert reached == ["/api/search?q=potion", "/api/%73earch?q=potion"]
