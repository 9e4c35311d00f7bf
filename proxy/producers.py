"""Producers: a parsed request turned into an answer's bytes and the tags of what it shows.

An engine producer builds the engine body (``proxy.query``), makes the round trip under the
engine guard (``proxy.engine_guard``; a text search that matched nothing is relaxed,
``proxy.relaxation``), shapes the answer (``proxy.answers``) and serialises it. A fallback
producer answers the same request from Postgres (``proxy.fallback``), shaped by the same
functions. Each backend call is timed and counted here. The routes (``proxy.routes``) hand
producers to the response cache, which decides when they run.

Never: HTTP — no request, response or header is read or written here.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from aiohttp import web

from catalog.cache_generation import product_tag, seller_tag
from proxy.answers import shape_product, shape_search, shape_seller, shape_suggest
from proxy.cache.response_cache import FALLBACK_BACKEND, Produced
from proxy.errors import EngineSkipped, NotFound, Overloaded
from proxy.fallback.postgres import PostgresFallback
from proxy.params import SearchRequest, SuggestRequest
from proxy.query import build_product, build_seller, build_suggest
from proxy.relaxation import search_with_recovery
from proxy.state import ENGINE, ENGINE_GUARD, FALLBACK, IMAGES, METRICS, SYNONYMS, TAXONOMY

BACKEND = "elasticsearch"

T = TypeVar("T")


class Calls:
    """The engine round trips one producer made: a route charges those beyond the first
    (``proxy.routes``), so a search that is relaxed pays for the calls it costs."""

    __slots__ = ("engine",)

    def __init__(self) -> None:
        self.engine = 0


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


async def _engine_search(app: web.Application, body: dict[str, Any], operation: str, calls: Calls) -> dict[str, Any]:
    """One engine round trip, under the engine guard, timed and counted under ``operation``."""
    engine, guard = app[ENGINE], app[ENGINE_GUARD]
    calls.engine += 1
    return await _backend_call(app, BACKEND, operation, lambda: guard.call(lambda: engine.search(body)))


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


# --- engine producers -----------------------------------------------------------------------------


async def produce_search(app: web.Application, req: SearchRequest, calls: Calls) -> Produced:
    async def engine_search(body: dict[str, Any], operation: str) -> dict[str, Any]:
        return await _engine_search(app, body, operation, calls)

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


async def produce_suggestions(app: web.Application, req: SuggestRequest, calls: Calls) -> Produced:
    taxonomy = app[TAXONOMY].current
    found = await _engine_search(app, build_suggest(req, count_taxonomy=taxonomy is None), "suggest", calls)
    if taxonomy is not None:
        found = {**found, "aggregations": taxonomy.aggregations(req)}
    return _suggest_answer(shape_suggest(req, found))


async def produce_product(app: web.Application, product_id: int, calls: Calls) -> Produced:
    found = await _engine_search(app, build_product(product_id), "product", calls)
    return _product_answer(product_id, shape_product(found, app[IMAGES]))


async def produce_seller(app: web.Application, seller_id: int, calls: Calls) -> Produced:
    found = await _engine_search(app, build_seller(seller_id), "seller", calls)
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
