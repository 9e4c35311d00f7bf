"""The proxy's aiohttp application, built by :func:`create_app` from settings.

Every long-lived resource — engine client, Redis client, Postgres pool — is opened and closed
in one ``cleanup_ctx`` generator below, so start-up and shut-down read top to bottom here; the
search synonyms are loaded in another, which also re-reads them on SIGHUP.
Nothing is created at import time.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

from proxy.engine import EngineGateway
from proxy.metrics import ProxyMetrics
from proxy.middleware.cors import cors_middleware
from proxy.middleware.metrics import metrics_middleware
from proxy.middleware.problems import problems_middleware
from proxy.middleware.request_id import request_id_middleware
from proxy.openapi import openapi_bytes
from proxy.routes import ENGINE, METRICS, OPENAPI, POSTGRES, REDIS, SYNONYMS, SynonymsHolder, add_routes
from proxy.settings import ProxySettings
from proxy.synonyms import SynonymError, load_synonyms

log = logging.getLogger("hos_search.proxy")
SETTINGS = web.AppKey("settings", ProxySettings)


def create_app(settings: ProxySettings) -> web.Application:
    metrics = ProxyMetrics()
    app = web.Application(
        middlewares=[
            request_id_middleware,
            metrics_middleware(metrics),
            cors_middleware(settings.cors_origins),
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
    add_routes(app)
    app.cleanup_ctx.append(_synonyms)
    app.cleanup_ctx.append(_backends)
    return app


def reload_synonyms(app: web.Application) -> bool:
    """Re-read the synonym file; on any problem keep the synonyms in use. True if reloaded."""
    path = app[SETTINGS].synonyms_path
    try:
        synonyms = load_synonyms(path)
    except (OSError, SynonymError) as exc:
        log.error("synonyms NOT reloaded from %s (keeping the %d in use): %s", path, len(app[SYNONYMS].current), exc)
        return False
    app[SYNONYMS].current = synonyms
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
    yield
    if handled:
        loop.remove_signal_handler(signal.SIGHUP)


async def _backends(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    engine = EngineGateway(
        settings.elasticsearch_node,
        settings.search_index,
        pool_size=settings.engine_pool_size,
        timeout=settings.engine_timeout,
    )
    # The engine may be down at start: the proxy still starts, answers 503 and keeps trying.
    await engine.connect()
    app[ENGINE] = engine
    app[REDIS] = aioredis.from_url(
        settings.redis_url, socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=30
    )
    # min_size=0: no connection is opened until something needs one (today only /readyz).
    app[POSTGRES] = await asyncpg.create_pool(
        settings.database_url, min_size=0, max_size=4, timeout=2.0, command_timeout=2.0
    )
    log.info("proxy ready: index alias %s at %s", settings.search_index, settings.elasticsearch_node)
    yield
    await app[POSTGRES].close()
    await app[REDIS].aclose()
    await engine.close()
