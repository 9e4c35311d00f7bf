"""The application's state keys: what ``proxy.app`` opens and every request reads.

One module of keys only, so that middleware, the fast path and the routes can name the app's
resources without importing one another. Never: resources, logic, or anything created at
import time but the keys themselves.
"""

from __future__ import annotations

import asyncpg
from aiohttp import web

from catalog.redis_client import RedisClient
from proxy.cache.response_cache import ResponseCache
from proxy.engine import EngineGateway
from proxy.engine_guard import EngineGuard
from proxy.fallback.postgres import PostgresFallback
from proxy.http_caching import HttpCaching
from proxy.images import ImageUrls
from proxy.metrics import ProxyMetrics
from proxy.ratelimit.limiter import Limiter
from proxy.readiness import Check, Recent
from proxy.settings import ProxySettings
from proxy.synonyms import SynonymsHolder
from proxy.taxonomy import TaxonomyHolder

SETTINGS = web.AppKey("settings", ProxySettings)
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
# The last readiness check of this worker, reused for READYZ_CACHE_MS (proxy.readiness.Recent).
READINESS = web.AppKey("readiness", Recent[dict[str, Check]])
SYNONYMS = web.AppKey("synonyms", SynonymsHolder)
TAXONOMY = web.AppKey("taxonomy", TaxonomyHolder)
CACHE = web.AppKey("cache", ResponseCache)
LIMITER = web.AppKey("limiter", Limiter)
ENGINE_GUARD = web.AppKey("engine_guard", EngineGuard)
# None when FALLBACK_ENABLED=false.
FALLBACK: web.AppKey[PostgresFallback | None] = web.AppKey("fallback")
