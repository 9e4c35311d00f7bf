"""The route table (``proxy.routes``): one declaration per cached route, and its bounded memo."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable

import orjson
from aiohttp import web

from proxy.openapi import openapi_bytes
from proxy.params import SEARCH_PARAMS, SearchRequest, parse_search
from proxy.ratelimit.costs import DEEP_PAGE, DEFAULT_COSTS
from proxy.routes import MEMO_MAX_BYTES, MEMO_MAX_QUERY_CHARS, ROUTES, ROUTES_BY_PATH, ParsedQueries, add_routes


def _retained_while(fill: Callable[[], object]) -> int:
    """Bytes still allocated after ``fill`` ran (tracemalloc), what it returned kept alive."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = fill()
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    del kept
    return retained


def _many_values(i: int) -> str:
    """A valid search of under 1 KiB with the most values it may carry: the dearest to remember."""
    values = ",".join(f"v{j}" for j in range(19))
    return f"q={i}&category=c,{values}&fandom=f,{values}&seller_id=" + ",".join(str(j + 1) for j in range(20))


def test_the_query_memo_holds_no_more_than_its_byte_budget() -> None:
    assert len(_many_values(99_999)) <= MEMO_MAX_QUERY_CHARS

    def fill() -> ParsedQueries[SearchRequest]:
        memo: ParsedQueries[SearchRequest] = ParsedQueries(parse_search, SEARCH_PARAMS)
        for i in range(3 * MEMO_MAX_BYTES // 6_000):  # several times what fits
            memo.parse(_many_values(i))
            assert memo.bytes <= MEMO_MAX_BYTES
        return memo

    assert _retained_while(fill) <= MEMO_MAX_BYTES


def test_long_query_strings_are_parsed_every_time_not_remembered() -> None:
    # Issue 23: 4,096 query strings of up to 64 KiB each were kept, ~256 MiB per route.
    def fill() -> ParsedQueries[SearchRequest]:
        memo: ParsedQueries[SearchRequest] = ParsedQueries(parse_search, SEARCH_PARAMS)
        for i in range(1_000):
            raw = f"q=wand&junk{i}=" + "x" * 32_000
            _key, req = memo.parse(raw)
            assert req.q == "wand" and memo.known(raw) is None
        assert len(memo) == 0
        return memo

    assert _retained_while(fill) < 1024 * 1024


def test_a_short_query_string_is_parsed_once() -> None:
    memo: ParsedQueries[SearchRequest] = ParsedQueries(parse_search, SEARCH_PARAMS)
    first = memo.parse("q=harry+potter&page=2")
    assert memo.known("q=harry+potter&page=2") is first
    assert memo.parse("q=harry+potter&page=2") is first


def test_a_search_is_priced_from_its_parsed_page() -> None:
    search = ROUTES_BY_PATH["/api/search"]
    assert search.memo is not None
    for raw, cost in ((f"page={DEEP_PAGE}", 1.0), ("page=0000006", 2.0), (f"page={DEEP_PAGE + 1}", 2.0)):
        assert search.cost(DEFAULT_COSTS, search.memo.parse(raw)[1]) == cost, raw


def test_every_route_is_priced_documented_and_declared_once() -> None:
    documented = orjson.loads(openapi_bytes())["paths"]
    assert len({route.name for route in ROUTES}) == len({route.path for route in ROUTES}) == len(ROUTES)
    for route in ROUTES:
        assert route.name in DEFAULT_COSTS, route.name
        assert route.path in documented, route.path
        assert documented[route.path]["get"]["operationId"] == route.name


def test_the_router_s_templates_are_the_declared_paths() -> None:
    # The request metrics label a response by its resource's template; the limiter and the fast
    # path find a route by the same string.
    app = web.Application()
    add_routes(app)
    templates = {resource.canonical for resource in app.router.resources()}
    assert {route.path for route in ROUTES} <= templates
