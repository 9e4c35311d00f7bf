"""HTTP caching for browsers and a CDN, against real servers: Cache-Control, ETag and 304s,
Vary, image URLs through the CDN, and the operational surface (internal /metrics, /readyz).

Engine requests are counted from the proxy's own metrics (every engine call is timed in
``search_proxy_backend_duration_seconds`` or counted in ``search_proxy_backend_errors_total``),
so "no engine request" is what the proxy did, not what a test assumes.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from elasticsearch import AsyncElasticsearch

from catalog.cache_generation import Announcement, generation_key, product_tag
from catalog.config import ConfigError
from catalog.processes import stop_process
from devstack.servers import free_port
from devstack.stack import StackUrls
from proxy.app import create_app
from proxy.http_caching import HttpCaching, entity_tag, none_match
from proxy.images import ImageUrls, safe_image_url
from proxy.ratelimit.identity import KeyLimit
from proxy.settings import ProxySettings
from proxy.state import METRICS, SETTINGS
from tests.conftest import SearchCatalog, load_index, proxy_settings
from tests.indexer_support import TcpProxy, add_product, add_seller, eventually
from tests.proxy_support import fast_path_proxy, following, metric, proxy_env, spawn_proxy, wait_healthy

API_KEY = "partner-acme-7Hq2xLp9Vw"
SEARCH = "/api/search?q=wand&size=5"
SUGGEST = "/api/search/suggestions?q=harr"
ENGINE_ANSWER = re.compile(r"^public, max-age=(\d+), stale-while-revalidate=30, stale-if-error=300$")
# What a 304 repeats of its 200 (RFC 9110 §15.4.5; Cache-Control and X-Cache as they are now).
_REVALIDATION_HEADERS = ("ETag", "Vary", "X-Search-Backend")


@pytest_asyncio.fixture(loop_scope="session")
async def client(search_catalog: SearchCatalog, stack_urls: StackUrls) -> AsyncIterator[TestClient]:
    async with fast_path_proxy(proxy_settings(search_catalog, stack_urls)) as client:
        yield client


_sample = metric


def _engine_requests(client: TestClient) -> float:
    """Every engine call the proxy made: timed when it answered, counted when it failed."""
    metrics = client.app[METRICS]
    total = 0.0
    for family in metrics.registry.collect():
        if family.name in ("search_proxy_backend_duration_seconds", "search_proxy_backend_errors"):
            for sample in family.samples:
                if sample.labels.get("backend") == "elasticsearch" and sample.name.endswith(("_count", "_total")):
                    total += sample.value
    return total


async def _get(client: TestClient, path: str, **headers: str) -> tuple[aiohttp.ClientResponse, bytes]:
    response = await client.get(path, headers=headers)
    return response, await response.read()


def _assert_not_modified(response: aiohttp.ClientResponse, body: bytes, original: aiohttp.ClientResponse) -> None:
    assert response.status == 304, body[:300]
    assert body == b""
    assert "Content-Type" not in response.headers
    for name in _REVALIDATION_HEADERS:
        assert response.headers[name] == original.headers[name], name
    assert response.headers["Cache-Control"].split(", max-age=")[0] == original.headers["Cache-Control"].split(", ")[0]
    assert response.headers["X-Cache"] in ("HIT", "STALE", "MISS", "BYPASS")


# --- the ETag and 304s --------------------------------------------------------------------------


async def test_the_etag_is_a_digest_of_the_bytes_and_stable_across_tiers_and_proxies(
    client: TestClient, search_catalog: SearchCatalog, stack_urls: StackUrls
) -> None:
    miss, body = await _get(client, SEARCH)
    hit, again = await _get(client, SEARCH)
    assert (miss.headers["X-Cache"], hit.headers["X-Cache"]) == ("MISS", "HIT")
    assert again == body
    assert miss.headers["ETag"] == hit.headers["ETag"] == entity_tag(body)
    assert re.fullmatch(r'"[0-9a-f]{32}"', miss.headers["ETag"])
    other, other_body = await _get(client, "/api/search?q=cloak&size=5")
    assert other_body != body and other.headers["ETag"] == entity_tag(other_body) != miss.headers["ETag"]
    # Another proxy sharing the Redis entry (an L2 hit) sends the same bytes, so the same tag:
    # a CDN revalidating against any worker or host gets its 304.
    settings = proxy_settings(search_catalog, stack_urls, redis_key_prefix=client.app[SETTINGS].redis_key_prefix)
    async with TestClient(TestServer(create_app(settings))) as second:
        await following(second)
        shared, shared_body = await _get(second, SEARCH)
        assert shared.headers["X-Cache"] == "HIT" and shared_body == body
        assert shared.headers["ETag"] == miss.headers["ETag"]


async def test_the_etag_changes_when_the_answer_does_and_a_stale_tag_gets_the_new_answer(
    db: asyncpg.Connection,
    database_url: str,
    engine: AsyncElasticsearch,
    index_alias: str,
    stack_urls: StackUrls,
) -> None:
    seller = await add_seller(db)
    product_id = await add_product(db, seller, "Elder Wand", price=29.99)
    index = await load_index(db, engine, index_alias)
    settings = proxy_settings(SearchCatalog(database_url, index_alias, index), stack_urls)
    path = f"/api/products/{product_id}"
    async with TestClient(TestServer(create_app(settings))) as client:
        await following(client)
        first, body = await _get(client, path)
        assert first.status == 200 and b"29.99" in body
        old_tag = first.headers["ETag"]
        _assert_not_modified(*await _get(client, path, **{"If-None-Match": old_tag}), first)

        await engine.update(index=index_alias, id=str(product_id), doc={"price": 31.5}, refresh=True)
        redis = aioredis.from_url(stack_urls.redis_url)
        key = generation_key(settings.redis_key_prefix)
        try:  # what the indexer announces after writing the change
            await redis.publish(key, Announcement.of(int(await redis.incr(key)), {product_tag(product_id)}).encode())
        finally:
            await redis.aclose()

        async def changed() -> tuple[aiohttp.ClientResponse, bytes] | None:
            response, body = await _get(client, path, **{"If-None-Match": old_tag})
            return (response, body) if response.status == 200 and b"31.5" in body else None

        fresh, new_body = await eventually(changed, timeout=5, what="the changed product through the proxy")
        new_tag = fresh.headers["ETag"]
        assert new_tag != old_tag and new_tag == entity_tag(new_body)
        _assert_not_modified(*await _get(client, path, **{"If-None-Match": new_tag}), fresh)


async def test_a_cached_answer_revalidates_with_a_304_and_no_engine_request(client: TestClient) -> None:
    item = (await (await client.get("/api/search?size=1")).json())["items"][0]
    # (address, route label, whether each request gets a spelling of its own: the fast path
    # answers only query strings it has parsed before, so these reach the application).
    paths = [
        (SEARCH, "/api/search", False),
        (SUGGEST, "/api/search/suggestions", False),
        (SEARCH + "&utm_source=mail", "/api/search", True),
        (f"/api/products/{item['id']}", "/api/products/{id}", False),
        (f"/api/sellers/{item['seller']['id']}", "/api/sellers/{id}", False),
    ]
    for path, route, respelled in paths:
        first, _ = await _get(client, path)
        assert first.status == 200
        etag = first.headers["ETag"]
        engine_before = _engine_requests(client)
        not_modified_before = _sample(client, "search_proxy_requests_total", route=route, method="GET", status="3xx")
        sent_tags = (etag, f"W/{etag}", f'"someone-else", {etag}', "*", f' "x",W/{etag} ')
        for i, sent in enumerate(sent_tags):
            address = f"{path}&n={i}" if respelled else path
            response, body = await _get(client, address, **{"If-None-Match": sent})
            _assert_not_modified(response, body, first)
            assert response.headers["X-Cache"] == "HIT"
        assert _engine_requests(client) == engine_before, path  # the cache answered every one
        counted = _sample(client, "search_proxy_requests_total", route=route, method="GET", status="3xx")
        assert counted - not_modified_before == len(sent_tags), path  # 304s, counted as such
        for sent in ('"someone-else"', 'W/"0123"', etag.strip('"')):
            response, body = await _get(client, path, **{"If-None-Match": sent})
            assert response.status == 200 and body and response.headers["ETag"] == etag, sent


async def test_a_fallback_answer_revalidates_too(search_catalog: SearchCatalog, stack_urls: StackUrls) -> None:
    refused = f"http://127.0.0.1:{free_port()}"
    settings = proxy_settings(search_catalog, stack_urls, elasticsearch_node=refused, engine_timeout_ms=1_000)
    async with TestClient(TestServer(create_app(settings))) as client:
        found = await (await client.get("/api/search?size=1")).json()
        # A detail page and suggestions: their bytes do not carry the backend's own time
        # (a search's took_ms), so the same answer has the same tag each time it is made.
        for path in (f"/api/products/{found['items'][0]['id']}", SUGGEST):
            first, body = await _get(client, path)
            assert first.status == 200 and first.headers["X-Search-Backend"] == "postgres", body[:300]
            assert first.headers["X-Cache"] == "BYPASS"
            assert first.headers["ETag"] == entity_tag(body)
            _assert_not_modified(*await _get(client, path, **{"If-None-Match": first.headers["ETag"]}), first)


# --- Cache-Control and Vary, case by case ------------------------------------------------------


async def test_engine_answers_are_public_for_max_age_beyond_their_age(client: TestClient) -> None:
    path = "/api/search?q=cloak&sort=price_asc"
    miss, _ = await _get(client, path)
    assert miss.headers["X-Cache"] == "MISS" and "Age" not in miss.headers
    match = ENGINE_ANSWER.match(miss.headers["Cache-Control"])
    assert match and int(match[1]) == 10
    assert miss.headers["Vary"] == "Origin, X-API-Key"  # CORS is configured for these proxies
    for header in ("RateLimit", "RateLimit-Policy", "X-RateLimit-Remaining"):
        assert header not in miss.headers
    await asyncio.sleep(1.1)
    hit, _ = await _get(client, path)
    assert hit.headers["X-Cache"] == "HIT" and int(hit.headers["Age"]) >= 1
    match = ENGINE_ANSWER.match(hit.headers["Cache-Control"])
    # A downstream cache counts Age against max-age: ten more seconds from now, whatever the age.
    assert match and int(match[1]) == int(hit.headers["Age"]) + 10


async def test_an_answer_for_an_allowed_origin_varies_by_origin_once(client: TestClient) -> None:
    response, _ = await _get(client, SUGGEST, Origin="https://shop.example")
    assert response.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert response.headers.getall("Vary") == ["Origin, X-API-Key"]
    assert "ETag" in response.headers["Access-Control-Expose-Headers"]
    preflight = await client.options(
        "/api/search", headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "GET"}
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Max-Age"] == "600"
    assert preflight.headers["Cache-Control"] == "public, max-age=600"
    assert preflight.headers["Vary"] == "Origin"
    assert "If-None-Match" in preflight.headers["Access-Control-Allow-Headers"]


async def test_a_stale_answer_served_while_the_engine_fails_gets_no_freshness_beyond_its_age(
    search_catalog: SearchCatalog, stack_urls: StackUrls
) -> None:
    cut = TcpProxy(stack_urls.elasticsearch_node)
    await cut.open()
    settings = proxy_settings(
        search_catalog,
        stack_urls,
        elasticsearch_node=cut.url,
        cache_ttl_s=1,
        cache_revalidate_ms=0,
        engine_timeout_ms=1_000,
        cors_origins=(),
    )
    try:
        async with TestClient(TestServer(create_app(settings))) as client:
            await following(client)
            first, _ = await _get(client, SEARCH)
            assert first.headers["X-Cache"] == "MISS" and first.headers["Vary"] == "X-API-Key"
            await cut.close()
            await asyncio.sleep(1.2)  # past the ttl: only the engine's failure lets it be served
            stale, _ = await _get(client, SEARCH)
            assert stale.status == 200 and stale.headers["X-Cache"] == "STALE"
            assert stale.headers["X-Search-Backend"] == "elasticsearch"
            age = int(stale.headers["Age"])
            assert (
                stale.headers["Cache-Control"]
                == f"public, max-age={age}, stale-while-revalidate=30, stale-if-error=300"
            )
            # Not cached anywhere: a fallback answer, short-lived and without stale-while-revalidate.
            fallback, _ = await _get(client, "/api/search?q=dragon")
            assert fallback.headers["X-Search-Backend"] == "postgres"
            assert fallback.headers["Cache-Control"] == "public, max-age=2, stale-if-error=300"
            assert "Age" not in fallback.headers
    finally:
        await cut.close()


async def test_per_client_and_failed_answers_are_never_publicly_cacheable(
    search_catalog: SearchCatalog, stack_urls: StackUrls
) -> None:
    settings = proxy_settings(
        search_catalog,
        stack_urls,
        rate_limit_enabled=True,
        rate_limit_max=4,
        rate_limit_ttl_ms=3_600_000,
        rate_limit_keys={API_KEY: KeyLimit(100, 60_000)},
    )
    async with fast_path_proxy(settings) as client:
        public, public_body = await _get(client, SEARCH)
        product_id = orjson.loads(public_body)["items"][0]["id"]
        assert public.headers["Cache-Control"].startswith("public, max-age=")
        assert "RateLimit" not in public.headers  # a CDN would hand it to every client
        keyed, _ = await _get(client, SEARCH, **{"X-API-Key": API_KEY})
        assert keyed.status == 200 and keyed.headers["X-Cache"] == "HIT"  # the fast path's answer
        assert keyed.headers["Cache-Control"] == "private, no-store"
        assert keyed.headers["RateLimit-Policy"] == '"key";q=100;w=60'
        assert keyed.headers["ETag"] == public.headers["ETag"]
        keyed_detail, _ = await _get(client, f"/api/products/{product_id}", **{"X-API-Key": "an-unknown-key-sixteen"})
        assert keyed_detail.status == 200 and keyed_detail.headers["Cache-Control"] == "private, no-store"
        bad, _ = await _get(client, "/api/search?size=0")
        assert bad.status == 400 and bad.headers["Cache-Control"] == "no-store"
        assert bad.headers["RateLimit"].startswith('"default";r=')
        missing, _ = await _get(client, "/api/products/999999999")
        assert missing.status == 404 and missing.headers["Cache-Control"] == "no-store"
        refused, _ = await _get(client, SEARCH)
        assert refused.status == 429 and refused.headers["Cache-Control"] == "no-store"
        assert refused.headers["X-RateLimit-Remaining"] == "0"
        for path in ("/readyz", "/metrics", "/healthz"):
            operational, _ = await _get(client, path)
            assert operational.headers["Cache-Control"] == "no-store", path
        document, _ = await _get(client, "/openapi.json")
        assert document.headers["Cache-Control"] == "no-cache"
        _assert_openapi_revalidates(*await _get(client, "/openapi.json", **{"If-None-Match": document.headers["ETag"]}))

    unavailable = proxy_settings(
        search_catalog,
        stack_urls,
        elasticsearch_node=f"http://127.0.0.1:{free_port()}",
        fallback_enabled=False,
        cache_enabled=False,
    )
    async with TestClient(TestServer(create_app(unavailable))) as client:
        failed, _ = await _get(client, SEARCH)
        assert failed.status == 503 and failed.headers["Cache-Control"] == "no-store"


def _assert_openapi_revalidates(response: aiohttp.ClientResponse, body: bytes) -> None:
    assert response.status == 304 and body == b""


async def test_with_private_scope_every_answer_is_the_browser_s_alone_and_says_where_it_stands(
    search_catalog: SearchCatalog, stack_urls: StackUrls
) -> None:
    settings = proxy_settings(
        search_catalog, stack_urls, rate_limit_enabled=True, http_cache_scope="private", http_max_age_s=5
    )
    async with TestClient(TestServer(create_app(settings))) as client:
        response, _ = await _get(client, SEARCH)
        assert response.headers["Cache-Control"] == "private, max-age=5, stale-while-revalidate=30, stale-if-error=300"
        assert response.headers["RateLimit"].startswith('"default";r=')
        again, _ = await _get(client, SEARCH, **{"If-None-Match": response.headers["ETag"]})
        assert again.status == 304 and again.headers["RateLimit"].startswith('"default";r=')


# --- images through the CDN ---------------------------------------------------------------------

CDN = "https://cdn.hos-marketplace.example/img"


def _images_by_id(body: dict[str, Any]) -> dict[str, tuple[str | None, str | None]]:
    return {item["id"]: (item["image_url"], item.get("image_srcset", "absent")) for item in body["items"]}


def _on_cdn(original: str, rewritten: str) -> bool:
    return rewritten == CDN + urlsplit(original).path


async def test_image_urls_point_at_the_cdn_on_search_product_and_fallback_answers(
    search_catalog: SearchCatalog, stack_urls: StackUrls
) -> None:
    path = "/api/search?size=50"
    plain = proxy_settings(search_catalog, stack_urls)
    async with TestClient(TestServer(create_app(plain))) as client:
        originals = _images_by_id(await (await client.get(path)).json())
    assert any(url for url, _ in originals.values())
    assert all(srcset == "absent" for _, srcset in originals.values())
    conn = await asyncpg.connect(search_catalog.database_url)
    try:
        imageless = await conn.fetchval("SELECT id FROM products WHERE status = 'active' AND image_url IS NULL LIMIT 1")
    finally:
        await conn.close()

    with_cdn = proxy_settings(search_catalog, stack_urls, cdn_url=CDN, cdn_image_widths=(200, 400))
    async with TestClient(TestServer(create_app(with_cdn))) as client:
        seen = _images_by_id(await (await client.get(path)).json())
        assert seen.keys() == originals.keys()
        for product_id, (url, srcset) in seen.items():
            original = originals[product_id][0]
            if original is None:
                assert url is None and srcset is None
                continue
            assert url is not None and _on_cdn(original, url), (original, url)
            assert srcset == f"{url}?width=200 200w, {url}?width=400 400w"
        with_image = next(product_id for product_id, (url, _) in seen.items() if url)
        product = await (await client.get(f"/api/products/{with_image}")).json()
        assert (product["image_url"], product["image_srcset"]) == seen[with_image]
        without = await (await client.get(f"/api/products/{imageless}")).json()
        assert without["image_url"] is None and without["image_srcset"] is None

    fallback = proxy_settings(
        search_catalog, stack_urls, cdn_url=CDN, elasticsearch_node=f"http://127.0.0.1:{free_port()}"
    )
    async with TestClient(TestServer(create_app(fallback))) as client:
        response = await client.get(path)
        body = await response.json()
        assert response.headers["X-Search-Backend"] == "postgres"
        assert any(item["image_url"] for item in body["items"])
        for item in body["items"]:
            assert item["image_url"] is None or item["image_url"].startswith(CDN + "/"), item
            if item["id"] in originals and item["image_url"]:
                assert _on_cdn(originals[item["id"]][0] or "", item["image_url"])
        product_response = await client.get(f"/api/products/{with_image}")
        assert product_response.headers["X-Search-Backend"] == "postgres"
        assert _on_cdn(originals[with_image][0] or "", (await product_response.json())["image_url"])


async def test_an_answer_cached_before_the_cdn_was_set_is_not_served_with_the_old_urls(
    search_catalog: SearchCatalog, stack_urls: StackUrls, redis_prefix: str
) -> None:
    """Two proxies share a Redis prefix, one with the CDN and one without; a third has the CDN too."""
    path = "/api/search?q=plush&size=20"
    before = proxy_settings(search_catalog, stack_urls, redis_key_prefix=redis_prefix)
    after = proxy_settings(search_catalog, stack_urls, redis_key_prefix=redis_prefix, cdn_url=CDN)
    async with (
        TestClient(TestServer(create_app(before))) as old,
        TestClient(TestServer(create_app(after))) as new,
        TestClient(TestServer(create_app(after))) as also_new,
    ):
        for client in (old, new, also_new):
            await following(client)
        cached = await old.get(path)
        old_body = await cached.json()
        assert cached.headers["X-Cache"] == "MISS"
        urls = [item["image_url"] for item in old_body["items"] if item["image_url"]]
        assert urls and not any(url.startswith(CDN) for url in urls)

        response = await new.get(path)
        new_body = await response.json()
        assert response.headers["X-Cache"] == "MISS"  # not the entry made without the CDN
        assert [item["id"] for item in new_body["items"]] == [item["id"] for item in old_body["items"]]
        for old_item, new_item in zip(old_body["items"], new_body["items"], strict=True):
            if old_item["image_url"]:
                assert _on_cdn(old_item["image_url"], new_item["image_url"])
        assert response.headers["ETag"] != cached.headers["ETag"]

        shared = await also_new.get(path)  # same settings: the same entry, from Redis
        assert shared.headers["X-Cache"] == "HIT" and await shared.json() == new_body
        again = await old.get(path)
        assert again.headers["X-Cache"] == "HIT" and await again.json() == old_body


def test_image_urls_keep_the_path_and_query_under_the_cdn_prefix() -> None:
    images = ImageUrls("https://cdn.example.com/img/", (400, 200), "query")
    assert images.url("https://images.example/products/7.jpg?v=3#x") == "https://cdn.example.com/img/products/7.jpg?v=3"
    assert images.url("products/7.jpg") == "https://cdn.example.com/img/products/7.jpg"
    assert images.url(None) is None and images.srcset(None) is None
    assert images.srcset("https://images.example/a.jpg?v=3") == (
        "https://cdn.example.com/img/a.jpg?v=3&width=400 400w, https://cdn.example.com/img/a.jpg?v=3&width=200 200w"
    )
    cloudflare = ImageUrls("https://cdn.example.com/img", (400,), "cloudflare")
    assert cloudflare.srcset("https://images.example/products/7.jpg") == (
        "https://cdn.example.com/cdn-cgi/image/width=400/img/products/7.jpg 400w"
    )
    none = ImageUrls()
    assert none.url("https://images.example/a.jpg") == "https://images.example/a.jpg"
    assert none.cache_namespace == "" and images.cache_namespace not in ("", cloudflare.cache_namespace)


@pytest.mark.parametrize(
    "stored",
    [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "java\tscript:alert(1)",
        " javascript:alert(1)",
        "data:image/svg+xml;base64,PHN2Zz4=",
        "file:///etc/passwd",
        "https://images.example/a.jpg\n",
        "https://" + "a" * 3000 + ".example/a.jpg",
        "https://[::1/a.jpg",
        "https:///no-host.jpg",
    ],
)
def test_an_image_url_that_is_not_http_is_given_as_null(stored: str) -> None:
    for images in (ImageUrls(), ImageUrls("https://cdn.example.com", (400,))):
        assert images.url(stored) is None and images.srcset(stored) is None
    assert safe_image_url(stored) is None


def test_a_comma_or_space_in_an_image_path_cannot_split_the_srcset() -> None:
    images = ImageUrls("https://cdn.example.com", (200, 400))
    stored = "https://images.example/a.jpg, https://evil.example/b.jpg 9000w"
    srcset = images.srcset(stored)
    assert srcset is not None
    candidates = srcset.split(", ")
    assert len(candidates) == 2 and all(len(candidate.split(" ")) == 2 for candidate in candidates)
    assert candidates[0].startswith("https://cdn.example.com/a.jpg%2C%20https://evil.example/b.jpg%209000w")
    assert images.url(stored) == "https://cdn.example.com/a.jpg,%20https://evil.example/b.jpg%209000w"
    assert ImageUrls().url("https://images.example/a b.jpg") == "https://images.example/a%20b.jpg"


# --- pure rules -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "matches"),
    [
        ('"abc"', True),
        ('W/"abc"', True),
        ('"x", "abc"', True),
        ('"x",W/"abc" ', True),
        ("*", True),
        (" * ", True),
        ('"abcd"', False),
        ('"ab"', False),
        ("abc", False),
        ('"x", *', False),
        ("", False),
    ],
)
def test_if_none_match_compares_weakly_over_lists_and_star(sent: str, matches: bool) -> None:
    assert none_match(sent, '"abc"') is matches


def test_cache_control_by_how_the_answer_was_obtained() -> None:
    caching = HttpCaching(max_age=10, stale_while_revalidate=30, stale_if_error=300, fallback_max_age=2)
    tail = "stale-while-revalidate=30, stale-if-error=300"
    assert caching.cache_control("MISS", None, fallback=False, keyed=False) == f"public, max-age=10, {tail}"
    assert caching.cache_control("HIT", 25, fallback=False, keyed=False) == f"public, max-age=35, {tail}"
    assert caching.cache_control("STALE", 25, fallback=False, keyed=False) == f"public, max-age=25, {tail}"
    assert caching.cache_control("BYPASS", None, fallback=True, keyed=False) == "public, max-age=2, stale-if-error=300"
    assert caching.cache_control("HIT", 3, fallback=False, keyed=True) == "private, no-store"
    bare = HttpCaching(max_age=0, stale_while_revalidate=0, stale_if_error=0, fallback_max_age=0, scope="private")
    assert bare.cache_control("HIT", 4, fallback=False, keyed=False) == "private, max-age=4"
    assert bare.vary == "X-API-Key" and caching.vary == "X-API-Key"
    assert HttpCaching(max_age=1, stale_while_revalidate=1, stale_if_error=1, fallback_max_age=1, cors=True).vary == (
        "Origin, X-API-Key"
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CDN_URL": "cdn.example.com"}, "CDN_URL"),
        ({"CDN_URL": "ftp://cdn.example.com"}, "CDN_URL"),
        ({"CDN_URL": "https://cdn.example.com/?v=1"}, "CDN_URL"),
        ({"CDN_URL": "https://cdn.example.com/#top"}, "CDN_URL"),
        ({"CDN_URL": "https://cdn.example.com:99999"}, "CDN_URL"),
        ({"CDN_IMAGE_WIDTHS": "200"}, "CDN_IMAGE_WIDTHS"),
        ({"CDN_URL": "https://cdn.example.com", "CDN_IMAGE_WIDTHS": "200,wide"}, "CDN_IMAGE_WIDTHS"),
        ({"CDN_URL": "https://cdn.example.com", "CDN_IMAGE_WIDTHS": "0"}, "CDN_IMAGE_WIDTHS"),
        ({"CDN_URL": "https://cdn.example.com", "CDN_IMAGE_RESIZE": "imgix"}, "CDN_IMAGE_RESIZE"),
        ({"HTTP_CACHE_SCOPE": "shared"}, "HTTP_CACHE_SCOPE"),
        ({"HTTP_MAX_AGE_S": "-1"}, "HTTP_MAX_AGE_S"),
        ({"METRICS_PORT": "70000"}, "METRICS_PORT"),
        ({"READYZ_DETAILS": "maybe"}, "READYZ_DETAILS"),
    ],
)
def test_bad_http_and_cdn_settings_name_their_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        ProxySettings.from_env(env)


def test_a_cdn_url_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigError, match="CDN_URL") as refused:
        ProxySettings.from_env({"CDN_URL": "https://user:hunter2-cdn@cdn.example.com"})
    assert "hunter2-cdn" not in str(refused.value)


def test_http_and_cdn_settings_from_the_environment() -> None:
    settings = ProxySettings.from_env(
        {
            "CDN_URL": "https://cdn.example.com/img/",
            "CDN_IMAGE_WIDTHS": "800, 200,400,200",
            "CDN_IMAGE_RESIZE": "cloudflare",
            "HTTP_MAX_AGE_S": "0",
            "HTTP_CACHE_SCOPE": "private",
            "METRICS_PORT": "9188",
            "READYZ_DETAILS": "false",
        }
    )
    assert settings.cdn_url == "https://cdn.example.com/img"
    assert settings.cdn_image_widths == (200, 400, 800) and settings.cdn_image_resize == "cloudflare"
    assert (settings.http_max_age_s, settings.http_cache_scope) == (0, "private")
    assert (settings.metrics_host, settings.metrics_port, settings.readyz_details) == ("127.0.0.1", 9188, False)
    defaults = ProxySettings.from_env({})
    assert (defaults.http_max_age_s, defaults.http_stale_while_revalidate_s, defaults.http_stale_if_error_s) == (
        10,
        30,
        300,
    )
    assert (defaults.cdn_url, defaults.metrics_port, defaults.readyz_details) == (None, 0, True)


# --- the operational surface ----------------------------------------------------------------------


async def test_readyz_can_say_its_status_alone(search_catalog: SearchCatalog, stack_urls: StackUrls) -> None:
    settings = proxy_settings(search_catalog, stack_urls, readyz_details=False)
    async with TestClient(TestServer(create_app(settings))) as client:
        response = await client.get("/readyz")
        assert response.status == 200 and await response.json() == {"status": "ready"}
    refused = proxy_settings(
        search_catalog, stack_urls, readyz_details=False, elasticsearch_node=f"http://127.0.0.1:{free_port()}"
    )
    async with TestClient(TestServer(create_app(refused))) as client:
        response = await client.get("/readyz")
        assert response.status == 200 and await response.json() == {"status": "degraded"}


async def test_readyz_details_are_on_by_default(client: TestClient) -> None:
    body = await (await client.get("/readyz")).json()
    assert {"status", "backend", "engine_breaker", "checks"} <= set(body)


def _requests_total(text: str, route: str) -> float:
    pattern = re.compile(
        rf'^search_proxy_requests_total\{{method="GET",route="{re.escape(route)}",status="2xx"\}} (\S+)$'
    )
    return sum(float(match[1]) for line in text.splitlines() if (match := pattern.match(line)))


def _multiprocess_dir(tmpdir: Path) -> Path:
    """The supervisor's PROMETHEUS_MULTIPROC_DIR (``proxy.server.supervise``) under its TMPDIR."""
    (directory,) = tmpdir.glob("hos-proxy-metrics-*")
    return directory


def _writers(directory: Path) -> set[str]:
    """The worker pids with metric files in the supervisor's multiprocess directory."""
    return {path.stem.rsplit("_", 1)[1] for path in directory.glob("*.db") if not path.stem.endswith("archive")}


async def test_metrics_on_an_internal_port_aggregate_every_worker_and_leave_the_public_one(
    search_catalog: SearchCatalog, stack_urls: StackUrls, tmp_path: Path
) -> None:
    metrics_port = free_port()
    env = proxy_env(search_catalog, stack_urls, METRICS_PORT=str(metrics_port), TMPDIR=str(tmp_path))
    proc, url = spawn_proxy(env, workers=2)
    internal = f"http://127.0.0.1:{metrics_port}"
    try:
        await wait_healthy(url, proc)
        directory = _multiprocess_dir(tmp_path)

        async def both_workers_up() -> bool:
            return len(_writers(directory)) == 2

        await eventually(both_workers_up, timeout=30, what="both workers writing metrics")
        requests = 60
        connector = aiohttp.TCPConnector(limit=0, force_close=True)  # new connections: both workers serve
        async with aiohttp.ClientSession(connector=connector) as session:
            async with session.get(url + "/metrics") as public:
                assert public.status == 404
                assert public.content_type == "application/problem+json"
            for _ in range(requests):
                async with session.get(url + "/openapi.json") as response:
                    assert response.status == 200
            async with session.get(internal + "/nothing-here") as other:
                assert other.status == 404
            # The probes too, as a worker answers them: Kubernetes needs only the internal port.
            async with session.get(internal + "/readyz") as ready:
                assert ready.status == 200 and (await ready.json())["status"] == "ready"
            async with session.get(internal + "/healthz") as alive:
                assert alive.status == 200 and (await alive.json()) == {"status": "ok"}

            async def counted() -> float:
                async with session.get(internal + "/metrics") as response:
                    assert response.status == 200 and response.headers["Cache-Control"] == "no-store"
                    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                    total = _requests_total(await response.text(), "/openapi.json")
                    return total if total == requests else 0.0

            await eventually(counted, timeout=10, what=f"{requests} requests counted by the internal listener")
    finally:
        await asyncio.to_thread(stop_process, proc, 30)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""


async def test_a_taken_metrics_port_stops_the_proxy_with_one_line_naming_it(
    search_catalog: SearchCatalog, stack_urls: StackUrls
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = proxy_env(search_catalog, stack_urls, METRICS_PORT=str(taken.getsockname()[1]))
        proc, _ = spawn_proxy(env, workers=1)
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=30)
    assert proc.returncode == 1
    assert "METRICS_PORT" in stderr and "Traceback" not in stderr
