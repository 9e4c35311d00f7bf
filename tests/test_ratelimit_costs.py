"""What requests cost (``proxy.ratelimit.costs``): the defaults, ``RATE_LIMIT_COSTS``, deep pages,
and, against real servers, that a cost cannot be dodged (issue 23): it is taken from the parsed
request, and a relaxed search pays for its engine calls."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer

from devstack.stack import StackUrls
from proxy.app import create_app
from proxy.ratelimit.costs import DEEP_PAGE, DEFAULT_COSTS, cost_of, costs_from_env
from proxy.settings import ProxySettings
from tests.conftest import SearchCatalog, proxy_settings

HOUR_MS = 3_600_000  # nothing refills within a test


def test_configured_costs_replace_only_the_names_given() -> None:
    costs = costs_from_env({"RATE_LIMIT_COSTS": " suggestions = 0.25 ,deep_search=5,"}, capacity=100)
    assert costs["suggestions"] == 0.25 and costs["deep_search"] == 5.0
    assert {name: costs[name] for name in ("search", "product", "seller")} == {
        "search": 1.0,
        "product": 1.0,
        "seller": 1.0,
    }
    assert ProxySettings.from_env({"RATE_LIMIT_COSTS": "seller=3"}).rate_limit_costs["seller"] == 3.0
    assert ProxySettings.from_env({}).rate_limit_costs == DEFAULT_COSTS


def test_a_free_route_and_a_cost_of_the_whole_bucket_are_allowed() -> None:
    costs = costs_from_env({"RATE_LIMIT_COSTS": "suggestions=0,product=10"}, capacity=10)
    assert costs["suggestions"] == 0 and costs["product"] == 10


@pytest.mark.parametrize(("page", "expected"), [(1, 1.0), (DEEP_PAGE, 1.0), (DEEP_PAGE + 1, 2.0), (10**6, 2.0)])
def test_a_search_beyond_the_deep_page_costs_more(page: int, expected: float) -> None:
    assert cost_of(DEFAULT_COSTS, "search", page) == expected


def test_only_a_search_has_deep_pages() -> None:
    assert cost_of(DEFAULT_COSTS, "suggestions", 9) == DEFAULT_COSTS["suggestions"]


def _limited(catalog: SearchCatalog, urls: StackUrls, capacity: int, **costs: float) -> TestServer:
    settings = proxy_settings(
        catalog,
        urls,
        rate_limit_enabled=True,
        rate_limit_max=capacity,
        rate_limit_ttl_ms=HOUR_MS,
        rate_limit_costs={**DEFAULT_COSTS, **costs},
        http_cache_scope="private",  # every answer says where the client stands
    )
    return TestServer(create_app(settings))


async def test_a_deep_page_written_with_leading_zeros_pays_for_a_deep_page(
    search_catalog: SearchCatalog, stack_urls: StackUrls
) -> None:
    async with TestClient(_limited(search_catalog, stack_urls, 5, deep_search=5.0)) as client:
        first = await client.get("/api/search?q=wand&page=0000006")
        assert first.status == 200 and first.headers["RateLimit"].split(";")[1] == "r=0"
        assert (await client.get("/api/search?q=wand&page=1")).status == 429


async def test_a_search_relaxed_after_finding_nothing_pays_for_each_engine_call(
    search_catalog: SearchCatalog, stack_urls: StackUrls
) -> None:
    async with TestClient(_limited(search_catalog, stack_urls, 10)) as client:
        # Strict (nothing), relaxed with the spelling suggester, then the corrected text: 3 calls.
        relaxed = await client.get("/api/search?q=okemon+plush")
        assert relaxed.status == 200 and (await relaxed.json())["did_you_mean"] == "pokemon plush"
        assert relaxed.headers["RateLimit"].split(";")[1] == "r=9"  # decided before the answer
        # The same answer again comes from the cache (STALE while this new proxy does not follow
        # the catalog generation yet, proxy.cache.freshness): one call's price.
        again = await client.get("/api/search?q=okemon+plush")
        assert again.headers["X-Cache"] in ("HIT", "STALE")
        assert again.headers["RateLimit"].split(";")[1] == "r=6"  # 10 - 3 - 1
