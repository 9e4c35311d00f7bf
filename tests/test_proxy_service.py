"""The proxy as a service: suggestions, operational endpoints, OpenAPI, CORS, outages, processes."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer

from devstack.servers import free_port
from devstack.stack import StackUrls
from proxy.app import create_app
from proxy.middleware.request_id import request_ids
from proxy.openapi import openapi_document
from proxy.taxonomy import taxonomy_body
from tests.conftest import SearchCatalog, proxy_settings
from tests.proxy_support import proxy_behind_front, proxy_env, spawn_proxy, wait_healthy

ROOT = Path(__file__).resolve().parent.parent


_settings = proxy_settings


@pytest.fixture
def client(proxy_client: TestClient) -> TestClient:
    return proxy_client


# --- suggestions ------------------------------------------------------------------------------


async def _suggest(client: TestClient, q: str, size: int = 8) -> list[dict[str, Any]]:
    response = await client.get("/api/search/suggestions", params={"q": q, "size": str(size)})
    assert response.status == 200, await response.text()
    body = await response.json()
    assert body["query"] == q
    return list(body["suggestions"])


async def test_a_prefix_suggests_the_fandom_and_its_products(client: TestClient) -> None:
    suggestions = await _suggest(client, "harr")
    assert {"text": "Harry Potter", "type": "fandom"} in suggestions
    products = [s for s in suggestions if s["type"] == "product"]
    assert products and all(s["id"] for s in products)
    assert all("harr" in s["text"].lower() for s in products)


async def test_suggestions_tolerate_a_typo_in_a_long_prefix(client: TestClient) -> None:
    suggestions = await _suggest(client, "hermoine")  # for Hermione
    assert any("hermione" in s["text"].lower() for s in suggestions), suggestions


async def test_suggestions_are_unique_and_bounded(client: TestClient) -> None:
    suggestions = await _suggest(client, "st", size=5)
    assert 0 < len(suggestions) <= 5
    texts = [s["text"].lower() for s in suggestions]
    assert len(texts) == len(set(texts))


# --- operational endpoints --------------------------------------------------------------------


async def test_healthz_and_readyz_report_every_dependency(client: TestClient) -> None:
    assert (await client.get("/healthz")).status == 200
    response = await client.get("/readyz")
    body = await response.json()
    assert response.status == 200, body
    assert body["status"] == "ready"
    assert set(body["checks"]) == {"elasticsearch", "redis", "postgres", "fallback"}
    assert all(check["ok"] for check in body["checks"].values())


async def test_metrics_count_requests_by_route_template(client: TestClient) -> None:
    await client.get("/api/search", params={"q": "wand"})
    await client.get("/api/search", params={"size": "0"})
    text = await (await client.get("/metrics")).text()
    assert 'search_proxy_requests_total{method="GET",route="/api/search",status="2xx"}' in text
    assert 'search_proxy_requests_total{method="GET",route="/api/search",status="4xx"}' in text
    assert "search_proxy_request_duration_seconds_bucket" in text
    assert "wand" not in text  # never a query string in a label


async def test_request_id_is_echoed_or_generated(client: TestClient) -> None:
    echoed = await client.get("/api/search", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["X-Request-ID"] == "abc-123"
    generated = await client.get("/api/search", headers={"X-Request-ID": "bad id\twith junk"})
    assert generated.headers["X-Request-ID"] not in ("", "bad id\twith junk")
    problem = await client.get("/api/search?size=0", headers={"X-Request-ID": "req-9"})
    assert problem.headers["X-Request-ID"] == "req-9"
    assert (await problem.json())["instance"] == "urn:request:req-9"


def test_generated_request_ids_are_the_prefix_and_a_counter_in_six_hex_digits() -> None:
    made = list(itertools.islice(request_ids("f00d"), 9_000))  # past two turns of the low digits
    assert made == [f"f00d{n:06x}" for n in range(9_000)]


async def test_cors_allows_only_the_configured_storefront(client: TestClient) -> None:
    allowed = await client.get("/api/search", headers={"Origin": "https://shop.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "X-Request-ID" in allowed.headers["Access-Control-Expose-Headers"]
    other = await client.get("/api/search", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = await client.options(
        "/api/search", headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "GET"}
    )
    assert preflight.status == 204
    assert "GET" in preflight.headers["Access-Control-Allow-Methods"]


# --- the OpenAPI document matches real responses ----------------------------------------------


def _validator(schema_name: str) -> jsonschema.protocols.Validator:
    document = openapi_document()
    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": document["components"]}
    return jsonschema.Draft202012Validator(schema)


async def test_real_responses_match_the_openapi_document(client: TestClient) -> None:
    served = orjson.loads(await (await client.get("/openapi.json")).read())
    assert served == orjson.loads(orjson.dumps(openapi_document()))
    assert served["openapi"].startswith("3.1")
    jsonschema.Draft202012Validator.check_schema({"components": served["components"]})
    for params in ({"q": "hary poter"}, {"category": "props", "sort": "price_asc"}, {"q": "zzzzqqqq"}):
        _validator("SearchResponse").validate(await (await client.get("/api/search", params=params)).json())
    _validator("SuggestResponse").validate(await (await client.get("/api/search/suggestions?q=har")).json())
    _validator("Problem").validate(await (await client.get("/api/search?size=0")).json())
    _validator("Problem").validate(await (await client.post("/api/search")).json())
    _validator("Readiness").validate(await (await client.get("/readyz")).json())
    # Every documented parameter name is one the parser knows, and vice versa.
    from proxy.params import SEARCH_PARAMS, SUGGEST_PARAMS

    documented = {p["name"] for p in served["paths"]["/api/search"]["get"]["parameters"]}
    assert documented == set(SEARCH_PARAMS)
    documented = {p["name"] for p in served["paths"]["/api/search/suggestions"]["get"]["parameters"]}
    assert documented == set(SUGGEST_PARAMS)


# --- outages ----------------------------------------------------------------------------------


def _engine_only(catalog: SearchCatalog, urls: StackUrls, **overrides: Any) -> Any:
    """Settings without the Postgres fallback: an engine failure is the client's 503 (the
    fallback's side is in tests/test_degradation.py). Each /readyz probes afresh: these tests
    watch the engine's state change."""
    return proxy_settings(catalog, urls, fallback_enabled=False, readyz_cache_ms=0, **overrides)


async def test_engine_refusing_connections_gives_a_quick_503(
    search_catalog: SearchCatalog, stack_urls: StackUrls
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    settings = _engine_only(search_catalog, stack_urls, elasticsearch_node=dead, engine_timeout_ms=500)
    async with TestClient(TestServer(create_app(settings))) as client:
        started = time.monotonic()
        response = await client.get("/api/search", params={"q": "wand"})
        assert response.status == 503
        assert response.content_type == "application/problem+json"
        assert "Connection" not in await response.text()
        assert time.monotonic() - started < 5
        ready = await client.get("/readyz")
        assert ready.status == 503
        assert (await ready.json())["checks"]["elasticsearch"]["ok"] is False


async def _silent_server() -> tuple[asyncio.base_events.Server, int]:
    """Accepts connections and never answers: an engine that hangs."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()
        finally:
            writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_a_hanging_engine_times_out_into_a_503(search_catalog: SearchCatalog, stack_urls: StackUrls) -> None:
    from elasticsearch import AsyncElasticsearch

    from catalog.engine import PlainJsonNode
    from proxy.state import ENGINE

    server, port = await _silent_server()
    try:
        # At start-up: detection itself hangs, and is bounded by the timeout.
        hung = f"http://127.0.0.1:{port}"
        settings = _engine_only(search_catalog, stack_urls, elasticsearch_node=hung, engine_timeout_ms=300)
        async with TestClient(TestServer(create_app(settings))) as client:
            started = time.monotonic()
            assert (await client.get("/api/search", params={"q": "wand"})).status == 503
            assert time.monotonic() - started < 5
        # While serving: the engine was fine, then stops answering mid-flight.
        settings = _engine_only(search_catalog, stack_urls, engine_timeout_ms=300)
        async with TestClient(TestServer(create_app(settings))) as client:
            assert (await client.get("/api/search")).status == 200
            gateway = client.app[ENGINE]
            assert gateway.client is not None
            await gateway.client.close()
            gateway.client = AsyncElasticsearch(hosts=[hung], node_class=PlainJsonNode, request_timeout=0.3)
            started = time.monotonic()
            response = await client.get("/api/search", params={"q": "wand"})
            assert response.status == 503
            assert response.content_type == "application/problem+json"
            assert time.monotonic() - started < 5
    finally:
        server.close()


async def test_readyz_names_a_hanging_engine_with_a_503_every_time(
    search_catalog: SearchCatalog, stack_urls: StackUrls, caplog: pytest.LogCaptureFixture
) -> None:
    """The engine accepts connections and never answers: /readyz is a 503 naming it, never a 500.

    With the engine's own timeout equal to the old readiness timeout (both 2 s, the defaults),
    whichever fired first decided between a 503 and a 500 with a logged traceback.
    """
    from elasticsearch import AsyncElasticsearch

    from catalog.engine import PlainJsonNode
    from proxy.readiness import READY_BUDGET_S
    from proxy.state import ENGINE

    async def assert_engine_down(client: TestClient) -> None:
        started = time.monotonic()
        response = await client.get("/readyz")
        body = await response.json()
        assert response.status == 503, body
        assert body["status"] == "unavailable"
        assert body["checks"]["elasticsearch"]["ok"] is False
        assert body["checks"]["redis"]["ok"] and body["checks"]["postgres"]["ok"]
        _validator("Readiness").validate(body)
        # Bounded by the readiness budget (with room for a slow shared machine), not by the
        # engine's timeout.
        assert time.monotonic() - started < READY_BUDGET_S + 2

    server, port = await _silent_server()
    hung = f"http://127.0.0.1:{port}"
    caplog.set_level("INFO")
    try:
        # Never detected: each probe is the engine detection itself, hanging.
        for engine_timeout_ms in (2_000, 3_000):
            settings = _engine_only(
                search_catalog, stack_urls, elasticsearch_node=hung, engine_timeout_ms=engine_timeout_ms
            )
            async with TestClient(TestServer(create_app(settings))) as client:
                for _ in range(4):
                    await assert_engine_down(client)
        # Detected, then hanging: each probe is the alias check, hanging.
        async with TestClient(TestServer(create_app(_engine_only(search_catalog, stack_urls)))) as client:
            assert (await client.get("/readyz")).status == 200
            gateway = client.app[ENGINE]
            assert gateway.client is not None
            await gateway.client.close()
            gateway.client = AsyncElasticsearch(hosts=[hung], node_class=PlainJsonNode, request_timeout=10)
            for _ in range(2):
                await assert_engine_down(client)
    finally:
        server.close()
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert "Traceback" not in caplog.text


async def test_a_readyz_flood_makes_at_most_one_engine_call_a_second_and_searches_keep_answering(
    search_catalog: SearchCatalog, stack_urls: StackUrls
) -> None:
    async with proxy_behind_front(search_catalog, stack_urls) as (client, front):
        assert (await client.get("/readyz")).status == 200
        before = len(front.paths)
        started = time.monotonic()

        async def flood() -> list[int]:
            statuses = []
            for _ in range(20):
                responses = await asyncio.gather(*(client.get("/readyz") for _ in range(25)))
                statuses += [response.status for response in responses]
            return statuses

        async def searches() -> list[int]:
            statuses = []
            for _ in range(20):
                response = await client.get("/api/search", params={"q": "wand"})
                statuses.append(response.status)
            return statuses

        probes, searched = await asyncio.gather(flood(), searches())
        seconds = time.monotonic() - started
        assert probes == [200] * 500 and searched == [200] * 20
        engine_calls = front.paths[before:]
        alias_checks = sum(1 for path in engine_calls if not path.endswith("/_search"))
        # 500 probes: one check of the alias a second at most (and one more in flight).
        assert alias_checks <= seconds + 1, (alias_checks, seconds)


# --- the process ------------------------------------------------------------------------------


async def test_two_workers_share_the_port_and_stop_on_sigterm(
    search_catalog: SearchCatalog, stack_urls: StackUrls
) -> None:
    proc, url = spawn_proxy(proxy_env(search_catalog, stack_urls), workers=2)
    try:
        await wait_healthy(url, proc)
        workers = [
            int(p)
            for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        ]
        assert len(workers) == 2
        async with ClientSession() as session:
            for _ in range(20):
                async with session.get(url + "/api/search", params={"q": "wand"}) as response:
                    assert response.status == 200
            async with session.get(url + "/metrics") as response:
                text = await response.text()
        # Aggregated across workers: all 20 searches are counted, whichever worker served them.
        line = next(
            ln
            for ln in text.splitlines()
            if ln.startswith('search_proxy_requests_total{method="GET",route="/api/search",status="2xx"}')
        )
        assert float(line.split()[-1]) == 20.0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_taken_port_is_reported_in_one_line(search_catalog: SearchCatalog, stack_urls: StackUrls) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "proxy", "--port", str(port), "--workers", "1"],
            cwd=ROOT,
            env=proxy_env(search_catalog, stack_urls),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_settings_are_reported_in_one_line(search_catalog: SearchCatalog, stack_urls: StackUrls) -> None:
    env = {**proxy_env(search_catalog, stack_urls), "RATE_LIMIT_MAX": "lots"}
    result = subprocess.run(
        [sys.executable, "-m", "proxy", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "RATE_LIMIT_MAX" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


_EMPTY_ANSWER = {"hits": {"total": {"value": 0, "relation": "eq"}, "hits": []}, "aggregations": {}}


@contextlib.asynccontextmanager
async def _scripted_engine(search: Callable[[], Awaitable[dict[str, Any]]]) -> AsyncIterator[str]:
    """A real HTTP server speaking just enough of the engine's API: ``GET /`` and searches.

    Each search is answered with what ``search()`` returns (it may sleep first), except the
    proxy's read of the suggestions' vocabulary (``proxy.taxonomy``), answered at once with
    none: a scripted search must be the one a test sent. Yields the URL.
    """
    from aiohttp import web

    vocabulary_read = orjson.dumps(taxonomy_body())
    no_vocabulary: dict[str, Any] = {"aggregations": {kind: {"buckets": []} for kind in taxonomy_body()["aggs"]}}

    headers = {"X-Elastic-Product": "Elasticsearch"}
    root = {"version": {"distribution": "opensearch", "number": "3.8.0"}}

    async def info(request: web.Request) -> web.Response:
        return web.json_response(root, headers=headers)

    async def answer(request: web.Request) -> web.Response:
        if orjson.dumps(orjson.loads(await request.read())) == vocabulary_read:
            return web.json_response(no_vocabulary, headers=headers)
        return web.json_response(await search(), headers=headers)

    engine_app = web.Application()
    engine_app.router.add_get("/", info)
    engine_app.router.add_post("/{index}/_search", answer)
    runner = web.AppRunner(engine_app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def test_took_ms_is_the_engines_own_time_not_the_wall_time(
    search_catalog: SearchCatalog, stack_urls: StackUrls
) -> None:
    """One place sets took_ms: the engine's ``took``, so a cached body stays true (see openapi)."""

    async def slow_but_says_3_ms() -> dict[str, Any]:
        await asyncio.sleep(0.4)
        return {"took": 3, **_EMPTY_ANSWER}

    async with _scripted_engine(slow_but_says_3_ms) as engine_url:
        settings = _settings(search_catalog, stack_urls, elasticsearch_node=engine_url)
        async with TestClient(TestServer(create_app(settings))) as client:
            started = time.monotonic()
            response = await client.get("/api/search", params={"q": "wand"})
            waited = time.monotonic() - started
            body = await response.json()
    assert response.status == 200, body
    assert waited >= 0.4
    assert body["took_ms"] == 3
    _validator("SearchResponse").validate(body)


async def test_sigterm_lets_in_flight_searches_finish(search_catalog: SearchCatalog, stack_urls: StackUrls) -> None:
    """An engine that takes 1.5 s to answer; SIGTERM arrives mid-request; the answer still comes."""
    release = asyncio.Event()

    async def slow_search() -> dict[str, Any]:
        release.set()
        await asyncio.sleep(1.5)
        return {"took": 1, **_EMPTY_ANSWER}

    async with _scripted_engine(slow_search) as engine_url:
        proc, url = spawn_proxy(proxy_env(search_catalog, stack_urls, ELASTICSEARCH_NODE=engine_url), workers=1)
        try:
            await wait_healthy(url, proc)
            async with ClientSession() as session:
                in_flight = asyncio.ensure_future(session.get(url + "/api/search", params={"q": "wand"}))
                await asyncio.wait_for(release.wait(), 10)
                proc.send_signal(signal.SIGTERM)
                response = await asyncio.wait_for(in_flight, 15)
                assert response.status == 200
                assert (await response.json())["total"] == 0
            assert await asyncio.to_thread(proc.wait, 15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


async def test_highlights_escape_html_outside_the_em_tags(
    stack_urls: StackUrls, search_catalog: SearchCatalog, engine: Any, index_alias: str
) -> None:
    from catalog.mapping import index_mappings, index_settings, versioned_index_name

    index = versioned_index_name(index_alias)
    await engine.indices.create(index=index, settings=index_settings(replicas=0), mappings=index_mappings())
    await engine.index(
        index=index,
        id="1",
        refresh=True,
        document={
            "id": "1",
            "name": '<script>alert("x")</script> Elder Wand & Co',
            "description": "",
            "category": "props",
            "fandom": "Harry Potter",
            "price": 10.0,
            "currency": "GBP",
            "in_stock": True,
            "seller": {"id": "1", "name": "Ollivanders"},
            "created_at": "2026-01-01T00:00:00Z",
        },
    )
    await engine.indices.update_aliases(actions=[{"add": {"index": index, "alias": index_alias}}])
    settings = proxy_settings(search_catalog, stack_urls, search_index=index_alias)
    async with TestClient(TestServer(create_app(settings))) as client:
        body = await (await client.get("/api/search", params={"q": "elder wand"})).json()
    [item] = body["items"]
    assert item["name"] == '<script>alert("x")</script> Elder Wand & Co'  # the item itself is data
    highlighted = item["highlight"]["name"]
    assert "<script>" not in highlighted
    assert "&lt;script&gt;" in highlighted
    assert "<em>Elder</em>" in highlighted and "<em>Wand</em>" in highlighted
    assert "&amp;" in highlighted
