"""The HTTP routes: search, suggestions, product and seller pages, and the operational endpoints.

A cached route is "parsed request → answer": it parses and validates (``proxy.params``),
builds the canonical cache key (``proxy.cache.keys``) and asks the response cache
(``proxy.cache.response_cache``), handing it a *producer* for a miss. A producer turns the
parsed request into the answer's bytes and the tags of what it shows: engine body
(``proxy.query``) → one engine round trip (``proxy.engine``, under the engine guard's breaker
and slots, ``proxy.shedding``; a text search that matched nothing retries through
``proxy.recovery``) → shape (``proxy.results``) → orjson bytes. Each route also hands the cache
a *fallback* producer: the same request answered from Postgres (``proxy.fallback``) and shaped
by the same functions, used when the engine failed or was skipped and no stale answer is at
hand. The handler sends the bytes with headers saying how they were obtained (``X-Cache``,
``Age``, ``X-Search-Backend``) and how long others may keep them (``Cache-Control``, ``ETag``,
``Vary``: ``proxy.http_caching``), or a 304 when the client holds them already.
Handlers raise ``proxy.errors`` exceptions; ``proxy.middleware.problems`` answers them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import asyncpg
import orjson
from aiohttp import web

from catalog.generation import product_tag, seller_tag
from catalog.redis_client import RedisClient
from proxy.cache.keys import product_key, request_key, seller_key
from proxy.cache.response_cache import FALLBACK_BACKEND, Produced, Producer, ResponseCache, Served
from proxy.engine import EngineGateway
from proxy.errors import EngineSkipped, InvalidParameters, NotFound, Overloaded
from proxy.fallback.postgres import PostgresFallback
from proxy.http_caching import API_KEY_HEADER, NO_CACHE, NO_STORE, HttpCaching, conditional_response
from proxy.images import ImageUrls
from proxy.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from proxy.metrics import ProxyMetrics
from proxy.params import (
    SEARCH_PARAMS,
    SUGGEST_PARAMS,
    SearchRequest,
    SuggestRequest,
    invalid_utf8_params,
    parse_id,
    parse_search,
    parse_suggest,
)
from proxy.query import build_product, build_seller, build_suggest
from proxy.ratelimit.limiter import Limiter
from proxy.readiness import probe, readiness
from proxy.recovery import search_with_recovery
from proxy.results import shape_product, shape_search, shape_seller, shape_suggest
from proxy.shedding import EngineGuard
from proxy.synonyms import Synonyms


class SynonymsHolder:
    """The synonyms in use; replaced whole on reload (``proxy.app``), read once per search.

    ``fingerprint`` is part of every search's cache key: answers found with other synonyms are
    not served after a reload (``kill -HUP``), and workers still on the old file (mid-reload,
    or on another host) do not share entries with those on the new one.
    """

    __slots__ = ("current", "fingerprint")

    def __init__(self, current: Synonyms) -> None:
        self.current = current
        self.fingerprint = current.fingerprint()

    def replace(self, synonyms: Synonyms) -> None:
        self.current, self.fingerprint = synonyms, synonyms.fingerprint()


ENGINE = web.AppKey("engine", EngineGateway)
METRICS = web.AppKey("metrics", ProxyMetrics)
REDIS: web.AppKey[RedisClient] = web.AppKey("redis")
POSTGRES = web.AppKey("postgres", asyncpg.Pool)
OPENAPI = web.AppKey("openapi", bytes)
OPENAPI_ETAG = web.AppKey("openapi_etag", str)
HTTP_CACHING = web.AppKey("http_caching", HttpCaching)
IMAGES = web.AppKey("images", ImageUrls)
# False: /readyz answers its status alone (READYZ_DETAILS=false).
READYZ_DETAILS = web.AppKey("readyz_details", bool)
SYNONYMS = web.AppKey("synonyms", SynonymsHolder)
CACHE = web.AppKey("cache", ResponseCache)
LIMITER = web.AppKey("limiter", Limiter)
ENGINE_GUARD = web.AppKey("engine_guard", EngineGuard)
# None when FALLBACK_ENABLED=false.
FALLBACK: web.AppKey[PostgresFallback | None] = web.AppKey("fallback")

R = TypeVar("R", SearchRequest, SuggestRequest)

JSON = "application/json"
BACKEND = "elasticsearch"


def _query(request: web.Request, names: frozenset[str]) -> Any:
    """``request.query``, after refusing known parameters whose bytes are not UTF-8."""
    raw = request.rel_url.raw_query_string
    if "%" in raw:  # only percent-escapes can smuggle invalid bytes; plain ASCII is fine
        bad = invalid_utf8_params(raw, names)
        if bad:
            raise InvalidParameters([(name, "is not valid UTF-8") for name in bad])
    return request.query


T = TypeVar("T")


async def _backend_call(app: web.Application, backend: str, operation: str, call: Callable[[], Awaitable[T]]) -> T:
    """One backend call, timed and counted under ``backend`` and ``operation``.

    A call refused before the backend was asked — the engine skipped by its guard, the fallback
    over its cap — is not the backend's error (the guard and ``fallback_rejected`` count them).
    """
    metrics = app[METRICS]
    started = time.perf_counter()
    try:
        answer = await call()
    except EngineSkipped:
        raise
    except Overloaded:
        metrics.fallback_rejected.inc()
        raise
    except Exception:
        metrics.backend_errors.labels(backend, operation).inc()
        raise
    metrics.engine_duration.labels(backend, operation).observe(time.perf_counter() - started)
    return answer


async def _engine_search(app: web.Application, body: dict[str, Any], operation: str) -> dict[str, Any]:
    """One engine round trip, under the engine guard, timed and counted under ``operation``."""
    engine, guard = app[ENGINE], app[ENGINE_GUARD]
    return await _backend_call(app, BACKEND, operation, lambda: guard.call(lambda: engine.search(body)))


# --- producers: parsed request -> answer bytes + tags ------------------------------------------


def _search_answer(result: dict[str, Any]) -> Produced:
    return Produced(orjson.dumps(result), frozenset(product_tag(item["id"]) for item in result["items"]))


def _suggest_answer(result: dict[str, Any]) -> Produced:
    tags = frozenset(product_tag(s["id"]) for s in result["suggestions"] if s.get("type") == "product")
    return Produced(orjson.dumps(result), tags)


def _product_answer(product_id: int, product: dict[str, Any] | None) -> Produced:
    if product is None:
        raise NotFound(f"There is no active product {product_id}.")
    return Produced(orjson.dumps(product), frozenset((product_tag(product_id),)))


def _seller_answer(seller_id: int, seller: dict[str, Any] | None) -> Produced:
    if seller is None:
        raise NotFound(f"There is no seller {seller_id} with active products.")
    return Produced(orjson.dumps(seller), frozenset((seller_tag(seller_id),)))


async def produce_search(app: web.Application, req: SearchRequest) -> Produced:
    async def engine_search(body: dict[str, Any], operation: str) -> dict[str, Any]:
        return await _engine_search(app, body, operation)

    answer = await search_with_recovery(req, app[SYNONYMS].current, engine_search)
    if answer.outcome != "strict":
        app[METRICS].zero_results.labels(answer.outcome).inc()
    # took_ms is the engine's own time, set by shape_search: a property of the answer, so a
    # cached body stays true without being rewritten. Wall time is in the request metrics.
    return _search_answer(
        shape_search(
            req, answer.engine_body, relaxed=answer.relaxed, did_you_mean=answer.did_you_mean, images=app[IMAGES]
        )
    )


async def produce_suggestions(app: web.Application, req: SuggestRequest) -> Produced:
    return _suggest_answer(shape_suggest(req, await _engine_search(app, build_suggest(req), "suggest")))


async def produce_product(app: web.Application, product_id: int) -> Produced:
    found = await _engine_search(app, build_product(product_id), "product")
    return _product_answer(product_id, shape_product(found, app[IMAGES]))


async def produce_seller(app: web.Application, seller_id: int) -> Produced:
    found = await _engine_search(app, build_seller(seller_id), "seller")
    return _seller_answer(seller_id, shape_seller(seller_id, found))


# --- fallback producers: the same answers from Postgres, shaped by the same functions ---------------


async def _from_postgres(app: web.Application, operation: str, query: Callable[[PostgresFallback], Awaitable[T]]) -> T:
    """One fallback query, timed and counted like an engine call, under ``operation``."""
    fallback = app[FALLBACK]
    assert fallback is not None  # routes pass a fallback producer only when there is one
    return await _backend_call(app, FALLBACK_BACKEND, operation, lambda: query(fallback))


async def fallback_search(app: web.Application, req: SearchRequest) -> Produced:
    body, relaxed = await _from_postgres(app, "search", lambda fallback: fallback.search(req))
    return _search_answer(shape_search(req, body, relaxed=relaxed, images=app[IMAGES]))


async def fallback_suggestions(app: web.Application, req: SuggestRequest) -> Produced:
    return _suggest_answer(shape_suggest(req, await _from_postgres(app, "suggest", lambda f: f.suggest(req))))


async def fallback_product(app: web.Application, product_id: int) -> Produced:
    found = await _from_postgres(app, "product", lambda fallback: fallback.product(product_id))
    return _product_answer(product_id, shape_product(found, app[IMAGES]))


async def fallback_seller(app: web.Application, seller_id: int) -> Produced:
    found = await _from_postgres(app, "seller", lambda fallback: fallback.seller(seller_id))
    return _seller_answer(seller_id, shape_seller(seller_id, found))


def _fallback(app: web.Application, produce: Callable[[], Awaitable[Produced]]) -> Producer | None:
    return produce if app[FALLBACK] is not None else None


# --- cached routes -------------------------------------------------------------------------------


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


def cached_response(request: web.Request, route: str, served: Served) -> web.Response:
    """The response of a cached route: the answer's bytes and how they were obtained, or a 304
    when ``If-None-Match`` names them."""
    app = request.app
    app[METRICS].count_response(route, served.cache, backend=served.backend)
    headers = answer_headers(app[HTTP_CACHING], served, keyed=API_KEY_HEADER in request.headers)
    return conditional_response(served.body, headers, request.headers.get("If-None-Match"))


class Parsed(Generic[R]):
    """Raw query string → (cache key, parsed request) for one route, remembered.

    Parsing is pure, so equal query strings parse alike: a popular URL is validated once, not
    on every cache hit. Only valid requests are remembered; the memo is emptied when full, so
    junk query strings can cost at most a re-parse of the popular ones.
    """

    def __init__(self, parse: Callable[[Any], R], names: frozenset[str], limit: int = 4096) -> None:
        self._parse: Callable[[Any], R] = parse
        self._names = names
        self._limit = limit
        self._memo: dict[str, tuple[str, R]] = {}

    def known(self, raw_query: str) -> tuple[str, R] | None:
        """The key and request of a query string parsed before; None if it was not (or is invalid)."""
        return self._memo.get(raw_query)

    def __call__(self, request: web.Request) -> tuple[str, R]:
        raw = request.rel_url.raw_query_string
        known = self._memo.get(raw)
        if known is not None:
            return known
        req = self._parse(_query(request, self._names))
        if len(self._memo) >= self._limit:
            self._memo.clear()
        known = self._memo[raw] = (request_key(req), req)
        return known


_SEARCH: Parsed[SearchRequest] = Parsed(parse_search, SEARCH_PARAMS)
_SUGGEST: Parsed[SuggestRequest] = Parsed(parse_suggest, SUGGEST_PARAMS)


def search_cache_key(app: web.Application, request_key: str) -> str:
    """Search answers depend on the synonyms too: their fingerprint is part of the key."""
    return f"{request_key}&synonyms={app[SYNONYMS].fingerprint}"


def suggest_cache_key(app: web.Application, request_key: str) -> str:
    return request_key


@dataclass(frozen=True, slots=True)
class HotRoute:
    """A route whose L1 hits ``proxy.fastpath`` may answer before the router and middlewares."""

    name: str  # the cache's and the responses' route label
    template: str  # the request metrics' route label
    parsed: Parsed[Any]
    cache_key: Callable[[web.Application, str], str]


HOT_ROUTES: dict[str, HotRoute] = {
    "/api/search": HotRoute("search", "/api/search", _SEARCH, search_cache_key),
    "/api/search/suggestions": HotRoute("suggestions", "/api/search/suggestions", _SUGGEST, suggest_cache_key),
}


async def search(request: web.Request) -> web.Response:
    app = request.app
    key, req = _SEARCH(request)
    served = await app[CACHE].answer(
        "search",
        search_cache_key(app, key),
        lambda: produce_search(app, req),
        _fallback(app, lambda: fallback_search(app, req)),
    )
    return cached_response(request, "search", served)


async def suggestions(request: web.Request) -> web.Response:
    app = request.app
    key, req = _SUGGEST(request)
    served = await app[CACHE].answer(
        "suggestions",
        suggest_cache_key(app, key),
        lambda: produce_suggestions(app, req),
        _fallback(app, lambda: fallback_suggestions(app, req)),
    )
    return cached_response(request, "suggestions", served)


async def product(request: web.Request) -> web.Response:
    app = request.app
    product_id = parse_id(request.match_info["id"])
    served = await app[CACHE].answer(
        "product",
        product_key(product_id),
        lambda: produce_product(app, product_id),
        _fallback(app, lambda: fallback_product(app, product_id)),
    )
    return cached_response(request, "product", served)


async def seller(request: web.Request) -> web.Response:
    app = request.app
    seller_id = parse_id(request.match_info["id"])
    served = await app[CACHE].answer(
        "seller",
        seller_key(seller_id),
        lambda: produce_seller(app, seller_id),
        _fallback(app, lambda: fallback_seller(app, seller_id)),
    )
    return cached_response(request, "seller", served)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type=JSON, headers={"Cache-Control": NO_STORE})


async def _ping_redis(redis: RedisClient) -> tuple[bool, str]:
    await redis.ping()
    return True, "ok"


async def _ping_postgres(pool: asyncpg.Pool) -> tuple[bool, str]:
    await pool.fetchval("SELECT 1")
    return True, "ok"


async def readyz(request: web.Request) -> web.Response:
    """Each dependency's state; 503 when search cannot be served (see ``proxy.readiness``)."""
    app = request.app
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
        checks["fallback"] = replica[0]
    status, body = readiness(
        checks,
        fallback=app[FALLBACK] is not None,
        breaker=app[ENGINE_GUARD].breaker.state,
    )
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
    app.router.add_get("/api/search", search)
    app.router.add_get("/api/search/suggestions", suggestions)
    # [^/]+, not aiohttp's default [^{}/]+: an id with a brace is a malformed id (400), not
    # another address (404).
    app.router.add_get("/api/products/{id:[^/]+}", product)
    app.router.add_get("/api/sellers/{id:[^/]+}", seller)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if metrics_route:
        app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
