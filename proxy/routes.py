"""The HTTP routes: search, suggestions and the operational endpoints.

Handlers only wire pure functions to sockets: parse (``proxy.params``) → build the engine body
(``proxy.query``) → one engine round trip (``proxy.engine``; a text search that matched nothing
retries through ``proxy.recovery``) → shape (``proxy.results``) → orjson bytes. They raise
``proxy.errors`` exceptions; ``proxy.middleware.problems`` answers them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import orjson
from aiohttp import web
from redis.asyncio import Redis

from proxy.engine import EngineGateway
from proxy.errors import InvalidParameters
from proxy.metrics import ProxyMetrics
from proxy.params import SEARCH_PARAMS, SUGGEST_PARAMS, invalid_utf8_params, parse_search, parse_suggest
from proxy.query import build_suggest
from proxy.readiness import probe, readiness
from proxy.recovery import search_with_recovery
from proxy.results import shape_search, shape_suggest
from proxy.synonyms import Synonyms


class SynonymsHolder:
    """The synonyms in use; replaced whole on reload (``proxy.app``), read once per search."""

    __slots__ = ("current",)

    def __init__(self, current: Synonyms) -> None:
        self.current = current


ENGINE = web.AppKey("engine", EngineGateway)
METRICS = web.AppKey("metrics", ProxyMetrics)
REDIS = web.AppKey("redis", Redis)
POSTGRES = web.AppKey("postgres", asyncpg.Pool)
OPENAPI = web.AppKey("openapi", bytes)
SYNONYMS = web.AppKey("synonyms", SynonymsHolder)

JSON = "application/json"
# Static response headers, built once: until the cache and fallback exist every search is
# answered by the engine and bypasses the cache.
_ENGINE_HEADERS = {"X-Search-Backend": "elasticsearch", "X-Cache": "BYPASS", "Cache-Control": "no-store"}


def _query(request: web.Request, names: frozenset[str]) -> Any:
    """``request.query``, after refusing known parameters whose bytes are not UTF-8."""
    raw = request.rel_url.raw_query_string
    if "%" in raw:  # only percent-escapes can smuggle invalid bytes; plain ASCII is fine
        bad = invalid_utf8_params(raw, names)
        if bad:
            raise InvalidParameters([(name, "is not valid UTF-8") for name in bad])
    return request.query


async def _engine_search(app: web.Application, body: dict[str, Any], operation: str) -> dict[str, Any]:
    """One engine round trip, timed and counted under ``operation``."""
    metrics = app[METRICS]
    started = time.perf_counter()
    try:
        engine_body = await app[ENGINE].search(body)
    except Exception:
        metrics.backend_errors.labels("elasticsearch", operation).inc()
        raise
    metrics.engine_duration.labels("elasticsearch", operation).observe(time.perf_counter() - started)
    return engine_body


def _json_response(result: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(result), content_type=JSON, headers=_ENGINE_HEADERS)


async def search(request: web.Request) -> web.Response:
    app = request.app
    req = parse_search(_query(request, SEARCH_PARAMS))

    async def engine_search(body: dict[str, Any], operation: str) -> dict[str, Any]:
        return await _engine_search(app, body, operation)

    answer = await search_with_recovery(req, app[SYNONYMS].current, engine_search)
    metrics = app[METRICS]
    metrics.responses_by_backend.labels("search", "elasticsearch").inc()
    if answer.outcome != "strict":
        metrics.zero_results.labels(answer.outcome).inc()
    # took_ms is the engine's own time, set by shape_search: a property of the answer, so a
    # cached body stays true without being rewritten. Wall time is in the request metrics.
    return _json_response(
        shape_search(req, answer.engine_body, relaxed=answer.relaxed, did_you_mean=answer.did_you_mean)
    )


async def suggestions(request: web.Request) -> web.Response:
    req = parse_suggest(_query(request, SUGGEST_PARAMS))
    engine_body = await _engine_search(request.app, build_suggest(req), "suggest")
    request.app[METRICS].responses_by_backend.labels("suggestions", "elasticsearch").inc()
    return _json_response(shape_suggest(req, engine_body))


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type=JSON)


async def _ping_redis(redis: Redis) -> tuple[bool, str]:
    await redis.ping()
    return True, "ok"


async def _ping_postgres(pool: asyncpg.Pool) -> tuple[bool, str]:
    await pool.fetchval("SELECT 1")
    return True, "ok"


async def readyz(request: web.Request) -> web.Response:
    """Each dependency's state; 503 when search cannot be served (see ``proxy.readiness``)."""
    app = request.app
    # Each probe is bounded and never raises, so gather cannot fail and this is never a 500.
    engine, redis, postgres = await asyncio.gather(
        probe(app[ENGINE].ready()), probe(_ping_redis(app[REDIS])), probe(_ping_postgres(app[POSTGRES]))
    )
    status, body = readiness({"elasticsearch": engine, "redis": redis, "postgres": postgres})
    return web.Response(
        status=503 if status == "unavailable" else 200,
        body=orjson.dumps(body),
        content_type=JSON,
        headers={"Cache-Control": "no-store"},
    )


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[METRICS].exposition(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI], content_type=JSON)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/search", search)
    app.router.add_get("/api/search/suggestions", suggestions)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
