"""The proxy's aiohttp application, built by :func:`create_app` from settings.

Each long-lived resource has its own ``cleanup_ctx`` generator below, in the order they start
(and the reverse of the order they stop): the search synonyms (re-read on SIGHUP), the task
that flushes the fast path's batched counters, the engine gateway (with its guard: breaker and
slots), the Redis client of the request path, the Postgres pool (readiness), the Postgres
fallback (a pool of its own), the response cache, the rate limiter, and the catalog-generation
subscriber that keeps the cache fresh. Nothing is created at import time.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from catalog.config import redact_url
from catalog.redis_client import open_redis, subscription_urls
from proxy.breaker import Breaker
from proxy.cache.freshness import CatalogView, Policy
from proxy.cache.l1 import LRU
from proxy.cache.l2 import RedisTier
from proxy.cache.notices import FillNotices
from proxy.cache.response_cache import ResponseCache
from proxy.cache.subscriber import Subscriber
from proxy.engine import EngineGateway
from proxy.engine_guard import EngineGuard
from proxy.errors import BackendUnavailable
from proxy.fallback.postgres import PostgresFallback
from proxy.http_caching import HttpCaching, entity_tag
from proxy.images import ImageUrls
from proxy.metrics import ProxyMetrics
from proxy.middleware.cors import cors_middleware
from proxy.middleware.metrics import metrics_middleware
from proxy.middleware.problems import problems_middleware
from proxy.middleware.ratelimit import ratelimit_middleware
from proxy.middleware.request_id import request_id_middleware
from proxy.openapi import openapi_bytes
from proxy.ratelimit.identity import KeyLimit
from proxy.ratelimit.limiter import Limiter
from proxy.ratelimit.script import RedisBuckets
from proxy.readiness import Recent
from proxy.routes import add_routes
from proxy.settings import ProxySettings
from proxy.state import (
    CACHE,
    ENGINE,
    ENGINE_GUARD,
    FALLBACK,
    HTTP_CACHING,
    IMAGES,
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
    TAXONOMY,
)
from proxy.storefront import add_routes as add_storefront_routes
from proxy.synonyms import SynonymError, SynonymsHolder, load_synonyms
from proxy.tasks import cancel_and_wait
from proxy.taxonomy import TaxonomyHolder, read_taxonomy, taxonomy_body

log = logging.getLogger("hos_search.proxy")
# Redis connections per worker on a request's path.
_REDIS_CONNECTIONS = 64


def create_app(settings: ProxySettings) -> web.Application:
    metrics = ProxyMetrics()
    limiting = [ratelimit_middleware()] if settings.rate_limit_enabled else []
    app = web.Application(
        middlewares=[
            request_id_middleware,
            metrics_middleware(metrics),
            cors_middleware(settings.cors_origins, max_age=settings.cors_max_age_s),
            *limiting,
            problems_middleware,
        ],
        # Search requests are GETs; a body larger than this is not a search.
        client_max_size=64 * 1024,
        # aiohttp's default request-line limit (8 KiB) would answer an over-long q with a bare
        # text/plain 400 before our parser could name the parameter; 64 KiB lets a 10,000-char
        # q reach it, and anything longer still gets the HTTP parser's 400.
        handler_args={"max_line_size": 64 * 1024},
    )
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[OPENAPI] = openapi_bytes()
    app[OPENAPI_ETAG] = entity_tag(app[OPENAPI])
    app[HTTP_CACHING] = HttpCaching(
        max_age=settings.http_max_age_s,
        stale_while_revalidate=settings.http_stale_while_revalidate_s,
        stale_if_error=settings.http_stale_if_error_s,
        fallback_max_age=settings.http_fallback_max_age_s,
        scope=settings.http_cache_scope,
        cors=bool(settings.cors_origins),
    )
    app[IMAGES] = ImageUrls(settings.cdn_url, settings.cdn_image_widths, settings.cdn_image_resize)
    app[READYZ_DETAILS] = settings.readyz_details
    app[READINESS] = Recent(settings.readyz_cache)
    add_routes(app, metrics_route=not settings.metrics_port)
    add_storefront_routes(app)
    app.cleanup_ctx.extend(
        (_synonyms, _metrics_flush, _engine, _taxonomy, _redis, _postgres, _fallback, _cache, _rate_limiter)
    )
    if settings.cache_enabled:
        app.cleanup_ctx.append(_generation_subscriber)
    return app


def reload_synonyms(app: web.Application) -> bool:
    """Re-read the synonym file; on any problem keep the synonyms in use. True if reloaded."""
    path = app[SETTINGS].synonyms_path
    try:
        synonyms = load_synonyms(path)
    except (OSError, SynonymError) as exc:
        log.error("synonyms NOT reloaded from %s (keeping the %d in use): %s", path, len(app[SYNONYMS].current), exc)
        return False
    app[SYNONYMS].replace(synonyms)
    log.info("synonyms reloaded: %d terms from %s", len(synonyms), path)
    return True


async def _synonyms(app: web.Application) -> AsyncIterator[None]:
    """Load the synonyms, and reload them on SIGHUP (``kill -HUP <pid>``) without a restart."""
    settings = app[SETTINGS]
    # Settings validated the file at start-up; a file broken since then fails the start loudly.
    app[SYNONYMS] = SynonymsHolder(load_synonyms(settings.synonyms_path))
    loop = asyncio.get_running_loop()
    # Signal handlers can only be installed from the main thread (not when embedded elsewhere).
    handled = threading.current_thread() is threading.main_thread()
    if handled:
        loop.add_signal_handler(signal.SIGHUP, reload_synonyms, app)
        # A worker starts with SIGHUP blocked (proxy.server): one sent while it started is
        # delivered now, to the handler, and the file is read again.
        mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})
    yield
    if handled:
        # As it was (blocked in a worker: none kills it while it stops; an app embedded in a test
        # leaves the test's mask alone, or every process it starts later would inherit a block).
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        loop.remove_signal_handler(signal.SIGHUP)


async def _metrics_flush(app: web.Application) -> AsyncIterator[None]:
    """Every second, add the fast path's batched hit counts to the metrics (``ProxyMetrics.flush``)."""
    metrics = app[METRICS]

    async def flush_every_second() -> None:
        while True:
            await asyncio.sleep(1.0)
            metrics.flush()

    task = asyncio.ensure_future(flush_every_second())
    yield
    await cancel_and_wait(task)
    metrics.flush()


async def _engine(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    engine = EngineGateway(
        settings.elasticsearch_node,
        settings.search_index,
        pool_size=settings.engine_pool_size,
        timeout=settings.engine_timeout,
        access=settings.engine_access,
    )
    # The engine may be down at start: the proxy still starts, answers from the fallback (or
    # 503) and keeps trying.
    await engine.connect()
    app[ENGINE] = engine
    metrics = app[METRICS]
    app[ENGINE_GUARD] = EngineGuard(
        Breaker(
            failures=settings.engine_breaker_failures,
            cooldown=settings.engine_breaker_cooldown,
            probes=settings.engine_breaker_probes,
        ),
        slots=settings.engine_slots,
        queue_wait=settings.engine_queue,
        on_skip=lambda reason: metrics.child(metrics.engine_skipped, reason).inc(),
        on_state=metrics.count_breaker_state,
    )
    log.info("proxy ready: index alias %s at %s", settings.search_index, redact_url(settings.elasticsearch_node))
    yield
    await engine.close()


# Until the vocabulary was first read (the engine may be down at start), try again this soon.
_TAXONOMY_RETRY_S = 1.0


async def _taxonomy(app: web.Application) -> AsyncIterator[None]:
    """Read the suggestions' fandom and category vocabulary (``proxy.taxonomy``) now and every
    ``SUGGEST_TAXONOMY_REFRESH_S``; when a read fails, the one held stays in use."""
    holder = app[TAXONOMY] = TaxonomyHolder()
    every = app[SETTINGS].suggest_taxonomy_refresh_s
    if not every:
        yield
        return
    engine = app[ENGINE]

    async def refresh_forever() -> None:
        read = False
        while True:
            try:
                holder.current = read_taxonomy(await engine.search(taxonomy_body()))
                read = True
            except BackendUnavailable as exc:
                log.debug("suggestion vocabulary not refreshed: %s", exc)
            await asyncio.sleep(every if read else min(every, _TAXONOMY_RETRY_S))

    task = asyncio.ensure_future(refresh_forever())
    yield
    await cancel_and_wait(task)


async def _redis(app: web.Application) -> AsyncIterator[None]:
    """The client of every Redis call on a request's path: short timeouts, no retries.

    A request must never wait on Redis longer than ``REDIS_TIMEOUT_MS``; redis-py's default
    retries (three, with backoff, since redis-py 6) would multiply that wait. The socket timeout
    stays although every caller bounds its calls too (L2, the readiness probe, the subscriber's
    watchdog): without it, redis-py's per-write task and per-read timeout were gone (~100 of a
    miss's ~2,600 Python calls), but the first of 1,000 identical cold requests on a fresh
    worker timed out its L2 read and filled on its own: 2 engine requests instead of 1 for the
    first cold URL in each of three runs of ``benchmarks.cache``'s stampede, 1 for every URL in
    both runs with it (2026-12-06; not understood yet).
    """
    settings = app[SETTINGS]
    timeout = settings.redis_timeout
    # A blocking pool: a burst waits (within the timeout) for one of its connections instead of
    # failing with MaxConnectionsError when redis-py's default pool of 100 runs out.
    # On a Redis Cluster no retry either: a failed call asks the client for a new slot table, and
    # the next call (a later request) uses it, so a failover heals without anyone waiting.
    app[REDIS] = open_redis(
        settings.redis_url,
        cluster=settings.redis_cluster,
        max_connections=_REDIS_CONNECTIONS,
        blocking=True,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
    )
    yield
    await app[REDIS].aclose()


async def _fallback(app: web.Application) -> AsyncIterator[None]:
    """The Postgres fallback search (``proxy.fallback``), or None when FALLBACK_ENABLED=false."""
    settings = app[SETTINGS]
    if not settings.fallback_enabled:
        app[FALLBACK] = None
        yield
        return
    fallback = await PostgresFallback.open(
        settings.fallback_database_url or settings.database_url,
        pool_size=settings.fallback_pool_size,
        statement_timeout_ms=settings.fallback_statement_timeout_ms,
        max_concurrency=settings.fallback_max_concurrency,
        queue_wait=settings.fallback_queue,
        # Only a replica lags: the primary (DATABASE_URL) needs no watcher.
        replica_max_lag_ms=settings.fallback_max_lag_ms if settings.fallback_database_url else 0,
        facets_max_age_ms=settings.fallback_facets_max_age_ms,
    )
    app[FALLBACK] = fallback
    yield
    await fallback.close()


async def _postgres(app: web.Application) -> AsyncIterator[None]:
    # min_size=0: no connection is opened until something needs one (today only /readyz).
    app[POSTGRES] = await asyncpg.create_pool(
        app[SETTINGS].database_url, min_size=0, max_size=4, timeout=2.0, command_timeout=2.0
    )
    yield
    await app[POSTGRES].close()


async def _cache(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    metrics = app[METRICS]
    policy = Policy(
        ttl=settings.cache_ttl_s,
        revalidate_after=settings.cache_revalidate,
        refresh_ahead=settings.cache_refresh_ahead,
        max_stale=settings.cache_max_stale,
        stale_if_error=settings.cache_stale_if_error_s,
    )
    l2 = RedisTier(
        app[REDIS],
        settings.redis_key_prefix,
        timeout=settings.redis_timeout,
        keep_for=policy.ttl + policy.stale_if_error,
        # Longer than any engine answer takes: a lock outliving its holder only delays others.
        lock_for=settings.engine_timeout + 0.5,
        on_error=lambda operation: metrics.cache_redis_errors.labels(operation).inc(),
    )
    app[CACHE] = ResponseCache(
        policy,
        LRU(settings.cache_l1_max_entries, settings.cache_l1_max_mb * 1024 * 1024),
        l2,
        CatalogView(policy),
        FillNotices(),
        metrics,
        lock_wait=settings.cache_lock_wait,
        # Answers hold image URLs as this proxy's CDN settings give them (proxy.images).
        namespace=settings.search_index + "|" + app[IMAGES].cache_namespace,
        enabled=settings.cache_enabled,
        fallback_full=None if (fallback := app[FALLBACK]) is None else fallback.would_shed,
    )
    yield
    await app[CACHE].close()  # L2 writes still under way after their answers


async def _rate_limiter(app: web.Application) -> AsyncIterator[None]:
    """The token-bucket limiter (``proxy.ratelimit``), on a Redis connection of its own.

    The limiter keeps one round trip in flight at a time and bounds each itself, so its client
    has no socket timeout: redis-py's (``asyncio.wait_for`` around every write, a timeout
    context around every read) cost more than the rest of a batched round trip.
    """
    settings = app[SETTINGS]
    client = open_redis(
        settings.redis_url,
        cluster=settings.redis_cluster,
        max_connections=4,
        socket_connect_timeout=settings.redis_timeout,
        # No read timeout on a cluster either: redis-py's default (5 s) is beyond every bound here.
        socket_timeout=None,
        retry=Retry(NoBackoff(), 0),
    )
    app[LIMITER] = Limiter(
        RedisBuckets(client, settings.redis_key_prefix, settings.rate_limit_key_groups),
        default=KeyLimit(settings.rate_limit_max, settings.rate_limit_ttl_ms),
        keys=settings.rate_limit_keys,
        trusted=settings.trusted_proxies,
        timeout=settings.redis_timeout,
        fallback=settings.rate_limit_fallback,
        ipv6_prefix=settings.rate_limit_ipv6_prefix,
        on_round_trip=app[METRICS].count_ratelimit_round_trip,
    )
    yield
    await app[LIMITER].close()
    await client.aclose()


async def _generation_subscriber(app: web.Application) -> AsyncIterator[None]:
    """Follow the catalog generation in the background for the cache (``proxy.cache.subscriber``)."""
    settings = app[SETTINGS]
    cache = app[CACHE]
    metrics = app[METRICS]

    def report(following: bool, generation: int) -> None:
        metrics.cache_following.set(1 if following else 0)
        metrics.cache_generation.set(generation)

    metrics.cache_following.set(0)
    commands = app[REDIS]
    subscriber = Subscriber(
        lambda: subscription_urls(commands, settings.redis_url),
        settings.redis_key_prefix,
        cache.view,
        cache.notices,
        commands,
        timeout=settings.redis_timeout,
        on_state=report,
    )
    task = asyncio.ensure_future(subscriber.run())
    yield
    await cancel_and_wait(task)
