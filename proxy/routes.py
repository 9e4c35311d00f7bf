"""The HTTP routes: the route table of the cached routes, and the operational endpoints.

Each cached route — search, suggestions, product and seller pages — is declared once, as a
:class:`Route` in :data:`ROUTES`: its path, its name, how a request is parsed (``proxy.params``)
into the canonical key (``proxy.cache.keys``) and a parsed request, the cache key, the engine and
fallback producers (``proxy.producers``) and its cost. That one declaration drives the handler
(:func:`handler`), the fast path (``proxy.fastpath``, for routes with a query-string memo), the
rate limiter's price (``proxy.middleware.ratelimit``), the metrics' route label (the path) and
the list of documented paths (``tests/test_openapi_contract.py`` checks it).

A cached route asks the response cache (``proxy.cache.response_cache``) for the answer, handing
it the producers for a miss, and sends the bytes with headers saying how they were obtained
(``X-Cache``, ``Age``, ``X-Search-Backend``) and how long others may keep them
(``Cache-Control``, ``ETag``, ``Vary``: ``proxy.http_caching``), or a 304 when the client holds
them already. Handlers raise ``proxy.errors`` exceptions; ``proxy.middleware.problems`` answers
them. Never: building engine bodies or shaping answers (the producers do), or reading settings
from the environment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, Generic, TypeVar
from urllib.parse import parse_qsl

import asyncpg
import orjson
from aiohttp import web
from multidict import MultiDict

from catalog.redis_client import RedisClient
from proxy.cache.keys import product_key, request_key, seller_key
from proxy.cache.response_cache import FALLBACK_BACKEND, Produced, Served
from proxy.errors import InvalidParameters, ProblemError
from proxy.http_caching import API_KEY_HEADER, NO_CACHE, NO_STORE, HttpCaching, conditional_response
from proxy.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from proxy.params import (
    SEARCH_PARAMS,
    SUGGEST_PARAMS,
    SearchRequest,
    SuggestRequest,
    escape_problems,
    parse_id,
    parse_search,
    parse_suggest,
)
from proxy.producers import (
    Calls,
    fallback_product,
    fallback_search,
    fallback_seller,
    fallback_suggestions,
    produce_product,
    produce_search,
    produce_seller,
    produce_suggestions,
)
from proxy.ratelimit.costs import cost_of
from proxy.readiness import Check, probe, readiness
from proxy.state import (
    CACHE,
    ENGINE,
    ENGINE_GUARD,
    FALLBACK,
    HTTP_CACHING,
    LIMITER,
    METRICS,
    OPENAPI,
    OPENAPI_ETAG,
    POSTGRES,
    READINESS,
    READYZ_DETAILS,
    REDIS,
    SETTINGS,
    SYNONYMS,
)

P = TypeVar("P")
R = TypeVar("R", SearchRequest, SuggestRequest)

JSON = "application/json"

# The parsed-query memo's bounds, per route (issue 23: 4,096 query strings of up to 64 KiB each
# could hold 256 MiB). The storefront's URLs are a few hundred bytes; longer ones are parsed on
# every request rather than remembered.
MEMO_MAX_QUERY_CHARS: Final = 1024
MEMO_MAX_BYTES: Final = 8 * 1024 * 1024
# What an entry holds besides its characters (dict slot, tuple, the parsed request's object),
# and each of its values besides theirs (a str object), in CPython; tests/test_routes.py
# measures the worst valid queries with tracemalloc against this estimate.
MEMO_ENTRY_OVERHEAD: Final = 1024
MEMO_VALUE_OVERHEAD: Final = 64


def _entry_bytes(raw: str, key: str) -> int:
    """What a memo entry is counted as holding: the raw string, its decoded values (no longer
    than it) and the key, each value's object (one per ``&`` or ``,`` at most), the entry."""
    values = raw.count("&") + raw.count(",") + 1
    return 2 * len(raw) + len(key) + values * MEMO_VALUE_OVERHEAD + MEMO_ENTRY_OVERHEAD


def _query(raw: str, names: frozenset[str]) -> Any:
    """The parameters of the raw query string ``raw`` (as ``request.query`` decodes them), after
    refusing known parameters whose names are percent-encoded or whose bytes are not UTF-8
    (``proxy.params.escape_problems``)."""
    problems = escape_problems(raw, names)
    if problems:
        raise InvalidParameters(problems)
    # parse_qsl, as yarl decodes request.query, but without yarl's cache of URL objects (it
    # would keep the last query strings parsed here, up to 64 KiB each).
    return MultiDict(parse_qsl(raw, keep_blank_values=True))


class ParsedQueries(Generic[R]):
    """Raw query string → (request key, parsed request) for one route, remembered.

    Parsing is pure, so equal query strings parse alike: a popular URL is validated once, not
    on every cache hit. Only valid requests of at most :data:`MEMO_MAX_QUERY_CHARS` are
    remembered, and at most ``max_bytes`` of them (as :func:`_entry_bytes` counts them); the
    memo is emptied when full, so junk query strings can cost at most a re-parse of the
    popular ones.
    """

    def __init__(self, parse: Callable[[Any], R], names: frozenset[str], max_bytes: int = MEMO_MAX_BYTES) -> None:
        self._parse: Callable[[Any], R] = parse
        self._names = names
        self._max_bytes = max_bytes
        self._memo: dict[str, tuple[str, R]] = {}
        self.bytes = 0  # what the entries are counted as holding (see the class docstring)

    def __len__(self) -> int:
        return len(self._memo)

    def known(self, raw_query: str) -> tuple[str, R] | None:
        """The key and request of a query string parsed before; None if it was not (or is invalid)."""
        return self._memo.get(raw_query)

    def __call__(self, request: web.BaseRequest) -> tuple[str, R]:
        return self.parse(request.rel_url.raw_query_string)

    def parse(self, raw: str) -> tuple[str, R]:
        """The key and request of the raw query string ``raw``; raises InvalidParameters."""
        known = self._memo.get(raw)
        if known is not None:
            return known
        req = self._parse(_query(raw, self._names))
        known = (request_key(req), req)
        if len(raw) <= MEMO_MAX_QUERY_CHARS:
            size = _entry_bytes(raw, known[0])
            if self.bytes + size > self._max_bytes:
                self._memo.clear()
                self.bytes = 0
            self._memo[raw] = known
            self.bytes += size
        return known


def _search_cache_key(app: web.Application, key: str) -> str:
    """Search answers depend on the synonyms too: their fingerprint is part of the key."""
    return f"{key}&synonyms={app[SYNONYMS].fingerprint}"


def _same_key(app: web.Application, key: str) -> str:
    return key


def _product_id(request: web.Request) -> tuple[str, int]:
    product_id = parse_id(request.match_info["id"])
    return product_key(product_id), product_id


def _seller_id(request: web.Request) -> tuple[str, int]:
    seller_id = parse_id(request.match_info["id"])
    return seller_key(seller_id), seller_id


def _search_cost(costs: Mapping[str, float], req: SearchRequest) -> float:
    return cost_of(costs, "search", req.page)


def _flat_cost(name: str) -> Callable[[Mapping[str, float], Any], float]:
    return lambda costs, parsed: costs[name]


@dataclass(frozen=True, slots=True)
class Route(Generic[P]):
    """One cached route, declared once (see the module docstring).

    ``cost`` prices a parsed request in tokens (``RATE_LIMIT_COSTS``); a request that does not
    parse pays ``costs[name]`` and gets its 400. Engine calls beyond the first (a search
    relaxed after finding nothing makes up to 3) are charged after the answer, ``costs[name]``
    each, from the same bucket: the next request sees them spent.
    """

    name: str  # the cache's, the limiter's and the responses' route label
    path: str  # the route template: the request metrics' label and the OpenAPI document's path
    parse: Callable[[web.Request], tuple[str, P]]  # -> (request key, parsed); InvalidParameters
    cache_key: Callable[[web.Application, str], str]
    produce: Callable[[web.Application, P, Calls], Awaitable[Produced]]
    fallback: Callable[[web.Application, P], Awaitable[Produced]]
    cost: Callable[[Mapping[str, float], P], float]
    # aiohttp's pattern where it is stricter than the path: [^/]+, not aiohttp's default
    # [^{}/]+, so an id with a brace is a malformed id (400), not another address (404).
    pattern: str | None = None
    # Query-string routes: the memo whose known requests ``proxy.fastpath`` may answer early.
    memo: ParsedQueries[Any] | None = None
    # Counted by backend too (search_proxy_search_responses_total).
    by_backend: bool = False


_SEARCH: Final[ParsedQueries[SearchRequest]] = ParsedQueries(parse_search, SEARCH_PARAMS)
_SUGGEST: Final[ParsedQueries[SuggestRequest]] = ParsedQueries(parse_suggest, SUGGEST_PARAMS)

ROUTES: Final[tuple[Route[Any], ...]] = (
    Route(
        name="search",
        path="/api/search",
        parse=_SEARCH,
        cache_key=_search_cache_key,
        produce=produce_search,
        fallback=fallback_search,
        cost=_search_cost,
        memo=_SEARCH,
        by_backend=True,
    ),
    Route(
        name="suggestions",
        path="/api/search/suggestions",
        parse=_SUGGEST,
        cache_key=_same_key,
        produce=produce_suggestions,
        fallback=fallback_suggestions,
        cost=_flat_cost("suggestions"),
        memo=_SUGGEST,
        by_backend=True,
    ),
    Route(
        name="product",
        path="/api/products/{id}",
        pattern="/api/products/{id:[^/]+}",
        parse=_product_id,
        cache_key=_same_key,
        produce=produce_product,
        fallback=fallback_product,
        cost=_flat_cost("product"),
    ),
    Route(
        name="seller",
        path="/api/sellers/{id}",
        pattern="/api/sellers/{id:[^/]+}",
        parse=_seller_id,
        cache_key=_same_key,
        produce=produce_seller,
        fallback=fallback_seller,
        cost=_flat_cost("seller"),
    ),
)
# A request's (key, parsed request), once its route has parsed it.
PARSED: Final = web.RequestKey("parsed", tuple)
# By template (aiohttp's canonical form of a matched resource): how middleware finds a route.
ROUTES_BY_PATH: Final[Mapping[str, Route[Any]]] = {route.path: route for route in ROUTES}


def route_of(request: web.Request) -> Route[Any] | None:
    """The cached route ``request`` was matched to; None for every other (and unmatched) one."""
    info = request.match_info
    if info.http_exception is not None:
        return None
    resource = info.route.resource
    return None if resource is None else ROUTES_BY_PATH.get(resource.canonical)


def request_cost(route: Route[Any], costs: Mapping[str, float], request: web.Request) -> float:
    """What ``request`` costs on ``route``, from its parsed form; a request that does not parse
    pays the route's own price (and gets its 400 from the handler)."""
    try:
        parsed = request[PARSED] = route.parse(request)  # the handler reuses it (long queries are not memoised)
    except ProblemError:  # the handler's parse raises it again, inside the problems middleware
        return costs[route.name]
    return route.cost(costs, parsed[1])


def answer_headers(caching: HttpCaching, served: Served, *, keyed: bool) -> dict[str, str]:
    """The headers of a cached route's answer (``proxy.fastpath`` gives its hits the same):
    how it was obtained, and how long others may keep it. ``keyed``: the request has an
    ``X-API-Key``, so the answer is that client's alone."""
    fallback = served.backend == FALLBACK_BACKEND
    headers = {
        "Content-Type": JSON,
        "Cache-Control": caching.cache_control(served.cache, served.age, fallback=fallback, keyed=keyed),
        "ETag": served.etag,
        "Vary": caching.vary,
        "X-Search-Backend": served.backend,
        "X-Cache": served.cache,
    }
    if served.age is not None:
        headers["Age"] = str(served.age)
    return headers


def cached_response(request: web.Request, route: Route[Any], served: Served) -> web.Response:
    """The response of a cached route: the answer's bytes and how they were obtained, or a 304
    when ``If-None-Match`` names them."""
    app = request.app
    app[METRICS].count_response(route.name, served.cache, backend=served.backend if route.by_backend else None)
    headers = answer_headers(app[HTTP_CACHING], served, keyed=API_KEY_HEADER in request.headers)
    # A miss's L2 write starts once the answer is sent (issue 24), not as soon as it is made.
    sent = partial(app[CACHE].answer_sent, served) if served.due is not None else None
    return conditional_response(served.body, headers, request.headers.get("If-None-Match"), sent)


async def _charge_extra_calls(request: web.Request, route: Route[Any], extra: int) -> None:
    """Take the route's price for each engine call beyond the first from the client's bucket,
    one call at a time (a bucket that cannot pay for both still pays for one). The answer is
    already made: a bucket that cannot pay leaves it unrefused, the next request is not."""
    app = request.app
    settings = app[SETTINGS]
    if not settings.rate_limit_enabled:
        return
    price = settings.rate_limit_costs[route.name]
    for _ in range(extra):
        if not (await app[LIMITER].admit(request, price)).decision.allowed:
            return


def handler(route: Route[P]) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The handler of a cached route: parse, ask the cache (with the route's producers), answer."""

    async def handle(request: web.Request) -> web.Response:
        app = request.app
        # Parsed once: by the rate-limit middleware when limiting is on, else here.
        key, parsed = request.get(PARSED) or route.parse(request)
        calls = Calls()
        fallback = app[FALLBACK] is not None
        served = await app[CACHE].answer(
            route.name,
            route.cache_key(app, key),
            lambda: route.produce(app, parsed, calls),
            (lambda: route.fallback(app, parsed)) if fallback else None,
        )
        # Only this request's own fill counts: a joined or cached answer cost it no engine call.
        if calls.engine > 1:
            await _charge_extra_calls(request, route, calls.engine - 1)
        return cached_response(request, route, served)

    return handle


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type=JSON, headers={"Cache-Control": NO_STORE})


async def _ping_redis(redis: RedisClient) -> tuple[bool, str]:
    await redis.ping()
    return True, "ok"


async def _ping_postgres(pool: asyncpg.Pool) -> tuple[bool, str]:
    await pool.fetchval("SELECT 1")
    return True, "ok"


async def check_dependencies(app: web.Application) -> dict[str, Check]:
    """Probe every dependency once (see ``proxy.readiness``)."""
    # Each probe is bounded and never raises, so gather cannot fail and this is never a 500.
    fallback = app[FALLBACK]
    engine, redis, postgres, *replica = await asyncio.gather(
        probe(app[ENGINE].ready()),
        probe(_ping_redis(app[REDIS])),
        probe(_ping_postgres(app[POSTGRES])),
        *([probe(fallback.ready())] if fallback is not None else []),
    )
    checks = {"elasticsearch": engine, "redis": redis, "postgres": postgres}
    if replica:
        checks["fallback"] = replica[0]  # the fallback's own database (a replica, perhaps)
    return checks


async def readyz(request: web.Request) -> web.Response:
    """Each dependency's state; 503 when search cannot be served (see ``proxy.readiness``)."""
    app = request.app
    # One check per worker at a time, reused for READYZ_CACHE_MS: a flood costs the engine nothing.
    checks = await app[READINESS].get(lambda: check_dependencies(app))
    status, body = readiness(checks, fallback=app[FALLBACK] is not None, breaker=app[ENGINE_GUARD].breaker.state)
    return web.Response(
        status=503 if status == "unavailable" else 200,
        # The states of the dependencies are for operators; a public listener may say less.
        body=orjson.dumps(body if app[READYZ_DETAILS] else {"status": status}),
        content_type=JSON,
        headers={"Cache-Control": NO_STORE},
    )


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[METRICS].exposition(),
        headers={"Content-Type": METRICS_CONTENT_TYPE, "Cache-Control": NO_STORE},
    )


async def openapi(request: web.Request) -> web.Response:
    # Changes only with a deploy: kept, but revalidated on every use (a 304 costs nothing).
    headers = {"Content-Type": JSON, "Cache-Control": NO_CACHE, "ETag": request.app[OPENAPI_ETAG]}
    vary = request.app[HTTP_CACHING].document_vary
    if vary is not None:
        headers["Vary"] = vary
    return conditional_response(request.app[OPENAPI], headers, request.headers.get("If-None-Match"))


def add_routes(app: web.Application, *, metrics_route: bool = True) -> None:
    """The routes; ``metrics_route`` False when ``/metrics`` has a listener of its own
    (``METRICS_PORT``, ``proxy.server``): then the public one answers 404 there."""
    for route in ROUTES:
        app.router.add_get(route.pattern or route.path, handler(route))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if metrics_route:
        app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
