"""The HTTP routes: search, suggestions and the operational endpoints.

Handlers only wire pure functions to sockets: parse (``proxy.params``) → build the engine body
(``proxy.query``) → one engine round trip (``proxy.engine``) → shape (``proxy.results``) →
orjson bytes. They raise ``proxy.errors`` exceptions; ``proxy.middleware.problems`` answers them.
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
from proxy.query import build_search, build_suggest
from proxy.results import shape_search, shape_suggest

ENGINE = web.AppKey("engine", EngineGateway)
METRICS = web.AppKey("metrics", ProxyMetrics)
REDIS = web.AppKey("redis", Redis)
POSTGRES = web.AppKey("postgres", asyncpg.Pool)
OPENAPI = web.AppKey("openapi", bytes)

JSON = "application/json"
# Static response headers, built once: until the cache and fallback exist every search is
# answered by the engine and bypasses the cache.
_ENGINE_HEADERS = {"X-Search-Backend": "elasticsearch", "X-Cache": "BYPASS", "Cache-Control": "no-store"}
_READY_CHECK_TIMEOUT_S = 1.0


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
    started = time.perf_counter()
    req = parse_search(_query(request, SEARCH_PARAMS))
    engine_body = await _engine_search(request.app, build_search(req), "search")
    result = shape_search(req, engine_body)
    # What the client waited for, not just the engine's own "took".
    result["took_ms"] = round((time.perf_counter() - started) * 1000)
    request.app[METRICS].responses_by_backend.labels("search", "elasticsearch").inc()
    return _json_response(result)


async def suggestions(request: web.Request) -> web.Response:
    req = parse_suggest(_query(request, SUGGEST_PARAMS))
    engine_body = await _engine_search(request.app, build_suggest(req), "suggest")
    request.app[METRICS].responses_by_backend.labels("suggestions", "elasticsearch").inc()
    return _json_response(shape_suggest(req, engine_body))


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type=JSON)


async def _check_redis(redis: Redis) -> tuple[bool, str]:
    try:
        await asyncio.wait_for(redis.ping(), _READY_CHECK_TIMEOUT_S)
    except Exception as exc:  # any failure is "not ready"; the reason is its class name only
        return False, type(exc).__name__
    return True, "ok"


async def _check_postgres(pool: asyncpg.Pool) -> tuple[bool, str]:
    try:
        await asyncio.wait_for(pool.fetchval("SELECT 1"), _READY_CHECK_TIMEOUT_S)
    except Exception as exc:
        return False, type(exc).__name__
    return True, "ok"


async def readyz(request: web.Request) -> web.Response:
    """Each dependency's state; 503 when search cannot be served at all.

    The engine is required (there is no fallback yet); Redis and Postgres being down degrade
    the service but do not stop it.
    """
    app = request.app
    (engine_ok, engine_why), (redis_ok, redis_why), (pg_ok, pg_why) = await asyncio.gather(
        asyncio.wait_for(app[ENGINE].ready(), _READY_CHECK_TIMEOUT_S * 2),
        _check_redis(app[REDIS]),
        _check_postgres(app[POSTGRES]),
        return_exceptions=False,
    )
    checks = {
        "elasticsearch": {"ok": engine_ok, "detail": engine_why},
        "redis": {"ok": redis_ok, "detail": redis_why},
        "postgres": {"ok": pg_ok, "detail": pg_why},
    }
    if not engine_ok:
        status = "unavailable"
    elif redis_ok and pg_ok:
        status = "ready"
    else:
        status = "degraded"
    return web.Response(
        status=503 if status == "unavailable" else 200,
        body=orjson.dumps({"status": status, "checks": checks}),
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
