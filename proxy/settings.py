"""The proxy's settings, read once from the environment at start-up.

Nothing below the entry point reads ``os.environ``: the frozen :class:`ProxySettings` is built
here and handed to :func:`proxy.app.create_app`. A bad value raises ``ConfigError`` naming the
variable.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from catalog.config import (
    DEFAULT_DATABASE_URL,
    DEFAULT_ELASTICSEARCH_NODE,
    DEFAULT_REDIS_KEY_PREFIX,
    DEFAULT_REDIS_URL,
    DEFAULT_SEARCH_INDEX,
    ConfigError,
    EngineAccess,
    env_bool,
    env_int,
    env_networks,
    env_str,
    shared_settings,
)
from proxy.http_caching import SCOPES
from proxy.images import RESIZE_SCHEMES
from proxy.ratelimit.costs import DEFAULT_COSTS, costs_from_env
from proxy.ratelimit.identity import KeyLimit, api_keys_from_env
from proxy.ratelimit.limiter import FALLBACKS, Fallback
from proxy.synonyms import DEFAULT_SYNONYMS_PATH, SynonymError, load_synonyms


@dataclass(frozen=True)
class ProxySettings:
    elasticsearch_node: str = DEFAULT_ELASTICSEARCH_NODE
    engine_access: EngineAccess = field(default_factory=EngineAccess)
    search_index: str = DEFAULT_SEARCH_INDEX
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    redis_key_prefix: str = DEFAULT_REDIS_KEY_PREFIX
    rate_limit_enabled: bool = True
    rate_limit_max: int = 100
    rate_limit_ttl_ms: int = 60_000
    # While Redis fails: an in-process bucket per client ("local"), admit all, or refuse all.
    rate_limit_fallback: Fallback = "local"
    # X-API-Key -> its own limit (RATE_LIMIT_KEYS / RATE_LIMIT_KEYS_FILE; proxy.ratelimit.identity).
    rate_limit_keys: Mapping[str, KeyLimit] = field(default_factory=dict)
    # Tokens per request by route (RATE_LIMIT_COSTS; proxy.ratelimit.costs).
    rate_limit_costs: Mapping[str, float] = field(default_factory=lambda: DEFAULT_COSTS)
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    cors_origins: tuple[str, ...] = ()
    engine_pool_size: int = 32
    engine_timeout_ms: int = 2_000
    # The engine guard (proxy.shedding): in-flight engine requests per worker (0: the pool
    # size), how long a request may wait for a slot, and the engine's circuit breaker.
    engine_max_in_flight: int = 0
    engine_queue_ms: int = 25
    engine_breaker_failures: int = 5
    engine_breaker_cooldown_ms: int = 2_000
    engine_breaker_probes: int = 2
    # The Postgres fallback (proxy.fallback): its own pool, a statement timeout, and a cap on
    # concurrent fallback queries per worker (a request waits at most FALLBACK_QUEUE_MS).
    fallback_enabled: bool = True
    fallback_pool_size: int = 4
    fallback_max_concurrency: int = 4
    fallback_queue_ms: int = 25
    fallback_statement_timeout_ms: int = 1_000
    access_log: bool = False
    shutdown_timeout_s: float = 10.0
    # Search synonyms (proxy.synonyms); re-read on SIGHUP.
    synonyms_path: Path = DEFAULT_SYNONYMS_PATH
    # Every Redis call on a request's path (cache tiers) gives up after this.
    redis_timeout_ms: int = 50
    # The response cache (proxy.cache; the rules are in proxy.cache.freshness).
    cache_enabled: bool = True
    cache_ttl_s: int = 60
    cache_revalidate_ms: int = 15_000
    cache_max_stale_ms: int = 500
    cache_stale_if_error_s: int = 300
    cache_l1_max_entries: int = 10_000
    cache_l1_max_mb: int = 64
    cache_lock_wait_ms: int = 1_000
    # HTTP caching downstream: browsers and a CDN (proxy.http_caching).
    http_max_age_s: int = 10
    http_stale_while_revalidate_s: int = 30
    http_stale_if_error_s: int = 300
    http_fallback_max_age_s: int = 2
    http_cache_scope: str = "public"
    cors_max_age_s: int = 600
    # Image URLs through the CDN (proxy.images); None: as stored.
    cdn_url: str | None = None
    cdn_image_widths: tuple[int, ...] = ()
    cdn_image_resize: str = "query"
    # /metrics on an internal listener of the supervisor instead of the public one (0: off).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    # /readyz says each dependency's state; false: the status alone.
    readyz_details: bool = True

    @property
    def engine_timeout(self) -> float:
        return self.engine_timeout_ms / 1000

    @property
    def engine_slots(self) -> int:
        return self.engine_max_in_flight or self.engine_pool_size

    @property
    def redis_timeout(self) -> float:
        return self.redis_timeout_ms / 1000

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ProxySettings:
        rate_limit_max = env_int(env, "RATE_LIMIT_MAX", 100, minimum=1)
        origins = tuple(o.strip().rstrip("/") for o in env.get("CORS_ORIGINS", "").split(",") if o.strip())
        return cls(
            **shared_settings(env),
            rate_limit_enabled=env_bool(env, "RATE_LIMIT_ENABLED", True),
            rate_limit_max=rate_limit_max,
            rate_limit_ttl_ms=env_int(env, "RATE_LIMIT_TTL", 60_000, minimum=1),
            rate_limit_fallback=_fallback(env),
            rate_limit_keys=api_keys_from_env(env),
            rate_limit_costs=costs_from_env(env, rate_limit_max),
            trusted_proxies=env_networks(env, "TRUSTED_PROXIES"),
            cors_origins=origins,
            engine_pool_size=env_int(env, "ENGINE_POOL_SIZE", 32, minimum=1, maximum=1024),
            engine_timeout_ms=env_int(env, "ENGINE_TIMEOUT_MS", 2_000, minimum=10, maximum=60_000),
            access_log=env_bool(env, "ACCESS_LOG", False),
            synonyms_path=_synonyms_path(env),
            redis_timeout_ms=env_int(env, "REDIS_TIMEOUT_MS", 50, minimum=1, maximum=1_000),
            **_cache_settings(env),
            **_degradation_settings(env),
            **_http_settings(env),
            **_cdn_settings(env),
            metrics_host=env_str(env, "METRICS_HOST", "127.0.0.1"),
            metrics_port=env_int(env, "METRICS_PORT", 0, minimum=0, maximum=65_535),
            readyz_details=env_bool(env, "READYZ_DETAILS", True),
        )


def _fallback(env: Mapping[str, str]) -> Fallback:
    raw = env.get("RATE_LIMIT_FALLBACK", "").strip() or "local"
    if raw not in FALLBACKS:
        raise ConfigError(f"RATE_LIMIT_FALLBACK: must be one of {', '.join(FALLBACKS)}, got {raw!r}")
    return cast(Fallback, raw)


def _cache_settings(env: Mapping[str, str]) -> dict[str, Any]:
    ttl_s = env_int(env, "CACHE_TTL_S", 60, minimum=1, maximum=86_400)
    revalidate_ms = env_int(env, "CACHE_REVALIDATE_MS", 15_000, minimum=0)
    if revalidate_ms > ttl_s * 1000:
        raise ConfigError(f"CACHE_REVALIDATE_MS: must not exceed CACHE_TTL_S ({ttl_s} s), got {revalidate_ms}")
    return {
        "cache_enabled": env_bool(env, "CACHE_ENABLED", True),
        "cache_ttl_s": ttl_s,
        "cache_revalidate_ms": revalidate_ms,
        "cache_max_stale_ms": env_int(env, "CACHE_MAX_STALE_MS", 500, minimum=0, maximum=60_000),
        "cache_stale_if_error_s": env_int(env, "CACHE_STALE_IF_ERROR_S", 300, minimum=0, maximum=86_400),
        "cache_l1_max_entries": env_int(env, "CACHE_L1_MAX_ENTRIES", 10_000, minimum=1),
        "cache_l1_max_mb": env_int(env, "CACHE_L1_MAX_MB", 64, minimum=1),
        "cache_lock_wait_ms": env_int(env, "CACHE_LOCK_WAIT_MS", 1_000, minimum=0, maximum=10_000),
    }


def _degradation_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """What the proxy does when the engine fails or is overloaded (``proxy.shedding``, ``proxy.fallback``)."""
    return {
        "engine_max_in_flight": env_int(env, "ENGINE_MAX_IN_FLIGHT", 0, minimum=0, maximum=4096),
        "engine_queue_ms": env_int(env, "ENGINE_QUEUE_MS", 25, minimum=0, maximum=10_000),
        "engine_breaker_failures": env_int(env, "ENGINE_BREAKER_FAILURES", 5, minimum=1, maximum=1000),
        "engine_breaker_cooldown_ms": env_int(env, "ENGINE_BREAKER_COOLDOWN_MS", 2_000, minimum=0, maximum=600_000),
        "engine_breaker_probes": env_int(env, "ENGINE_BREAKER_PROBES", 2, minimum=1, maximum=100),
        "fallback_enabled": env_bool(env, "FALLBACK_ENABLED", True),
        "fallback_pool_size": env_int(env, "FALLBACK_POOL_SIZE", 4, minimum=1, maximum=100),
        "fallback_max_concurrency": env_int(env, "FALLBACK_MAX_CONCURRENCY", 4, minimum=1, maximum=1000),
        "fallback_queue_ms": env_int(env, "FALLBACK_QUEUE_MS", 25, minimum=0, maximum=10_000),
        "fallback_statement_timeout_ms": env_int(
            env, "FALLBACK_STATEMENT_TIMEOUT_MS", 1_000, minimum=10, maximum=60_000
        ),
    }


def _http_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """What browsers and a CDN are told about keeping answers (``proxy.http_caching``)."""
    scope = env.get("HTTP_CACHE_SCOPE", "").strip() or "public"
    if scope not in SCOPES:
        raise ConfigError(f"HTTP_CACHE_SCOPE: must be one of {', '.join(SCOPES)}, got {scope!r}")
    return {
        "http_max_age_s": env_int(env, "HTTP_MAX_AGE_S", 10, minimum=0, maximum=86_400),
        "http_stale_while_revalidate_s": env_int(env, "HTTP_STALE_WHILE_REVALIDATE_S", 30, minimum=0, maximum=86_400),
        "http_stale_if_error_s": env_int(env, "HTTP_STALE_IF_ERROR_S", 300, minimum=0, maximum=604_800),
        "http_fallback_max_age_s": env_int(env, "HTTP_FALLBACK_MAX_AGE_S", 2, minimum=0, maximum=86_400),
        "http_cache_scope": scope,
        "cors_max_age_s": env_int(env, "CORS_MAX_AGE_S", 600, minimum=0, maximum=86_400),
    }


# Widths a CDN is asked to resize to: a few, each a plausible image width in pixels.
_MAX_WIDTHS = 10
_MAX_WIDTH = 10_000


def _cdn_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """``CDN_URL``, ``CDN_IMAGE_WIDTHS`` and ``CDN_IMAGE_RESIZE`` (``proxy.images``)."""
    cdn_url = _cdn_url(env)
    raw_widths = env.get("CDN_IMAGE_WIDTHS", "").strip()
    widths: set[int] = set()
    for entry in filter(None, (part.strip() for part in raw_widths.split(","))):
        if not entry.isdigit() or not 1 <= int(entry) <= _MAX_WIDTH:
            raise ConfigError(f"CDN_IMAGE_WIDTHS: widths are whole pixels from 1 to {_MAX_WIDTH}, got {entry!r}")
        widths.add(int(entry))
    if len(widths) > _MAX_WIDTHS:
        raise ConfigError(f"CDN_IMAGE_WIDTHS: at most {_MAX_WIDTHS} widths, got {len(widths)}")
    if widths and cdn_url is None:
        raise ConfigError("CDN_IMAGE_WIDTHS: needs CDN_URL (the CDN resizes the images)")
    resize = env.get("CDN_IMAGE_RESIZE", "").strip() or "query"
    if resize not in RESIZE_SCHEMES:
        raise ConfigError(f"CDN_IMAGE_RESIZE: must be one of {', '.join(RESIZE_SCHEMES)}, got {resize!r}")
    return {"cdn_url": cdn_url, "cdn_image_widths": tuple(sorted(widths)), "cdn_image_resize": resize}


def _cdn_url(env: Mapping[str, str]) -> str | None:
    """``CDN_URL``: an absolute http(s) URL, perhaps with a path, without query, fragment or
    credentials (it is written into every response); None when unset."""
    raw = env.get("CDN_URL", "").strip()
    if not raw:
        return None
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"CDN_URL={raw!r} is not a valid URL") from None
    if parts.username is not None or parts.password is not None:
        # Not echoed: it holds a password.
        raise ConfigError("CDN_URL: must not carry credentials (user:password@); it is sent in every response")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"CDN_URL={raw!r} must be an absolute http:// or https:// URL")
    if "?" in raw or "#" in raw:
        raise ConfigError(f"CDN_URL={raw!r} must have no query or fragment (image paths are appended to it)")
    return raw.rstrip("/")


def _synonyms_path(env: Mapping[str, str]) -> Path:
    """``SYNONYMS_PATH``: a readable file whose synonyms parse, else a ConfigError naming it."""
    raw = env.get("SYNONYMS_PATH", "").strip()
    path = Path(raw) if raw else DEFAULT_SYNONYMS_PATH
    try:
        load_synonyms(path)
    except OSError as exc:
        raise ConfigError(f"SYNONYMS_PATH: cannot read {path}: {exc.strerror or exc}") from None
    except SynonymError as exc:
        raise ConfigError(f"SYNONYMS_PATH: {path}: {exc}") from None
    return path
