"""The proxy's settings, read once from the environment at start-up.

Nothing below the entry point reads ``os.environ``: the frozen :class:`ProxySettings` is built
here and handed to :func:`proxy.app.create_app`. A bad value raises ``ConfigError`` naming the
variable.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from catalog.config import (
    ConfigError,
    Seconds,
    SharedSettings,
    env_networks,
    env_url,
    read_settings,
    setting,
)
from proxy.http_caching import SCOPES
from proxy.images import RESIZE_SCHEMES
from proxy.ratelimit.costs import DEFAULT_COSTS, costs_from_env
from proxy.ratelimit.identity import (
    DEFAULT_IPV6_PREFIX,
    MAX_IPV6_PREFIX,
    MIN_IPV6_PREFIX,
    KeyLimit,
    api_keys_from_env,
)
from proxy.ratelimit.limiter import FALLBACKS, Fallback
from proxy.ratelimit.script import DEFAULT_KEY_GROUPS, MAX_KEY_GROUPS
from proxy.synonyms import DEFAULT_SYNONYMS_PATH, SynonymError, load_synonyms


def _one_of(options: tuple[str, ...]) -> Callable[[Mapping[str, str], str, Any], Any]:
    """A reader of a setting that is one of ``options``."""

    def read(env: Mapping[str, str], name: str, default: str) -> str:
        raw = env.get(name, "").strip() or default
        if raw not in options:
            raise ConfigError(f"{name}: must be one of {', '.join(options)}, got {raw!r}")
        return raw

    return read


def _origins(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(o.strip().rstrip("/") for o in env.get(name, "").split(",") if o.strip()) or default


def _networks(env: Mapping[str, str], name: str, default: tuple[Any, ...]) -> tuple[Any, ...]:
    return env_networks(env, name) or default


def _optional_database_url(env: Mapping[str, str], name: str, default: str) -> str:
    """A Postgres URL, or ``default`` when the variable is unset or empty."""
    if not env.get(name, "").strip():
        return default
    return env_url(env, name, default, schemes=("postgresql", "postgres"))


@dataclass(frozen=True)
class ProxySettings(SharedSettings):
    """Every setting of the proxy: each field's variable, default and bounds are declared once,
    here (:func:`catalog.config.setting`); :meth:`from_env` reads them all and checks the few
    that depend on one another. Durations come from the environment in ms; the ``Seconds``
    attributes give them in seconds."""

    rate_limit_enabled: bool = setting("RATE_LIMIT_ENABLED", True)
    rate_limit_max: int = setting("RATE_LIMIT_MAX", 100, minimum=1)
    rate_limit_ttl_ms: int = setting("RATE_LIMIT_TTL", 60_000, minimum=1)
    # While Redis fails: an in-process bucket per client ("local"), admit all, or refuse all.
    rate_limit_fallback: Fallback = setting("RATE_LIMIT_FALLBACK", "local", read=_one_of(FALLBACKS))
    # X-API-Key -> its own limit (RATE_LIMIT_KEYS / RATE_LIMIT_KEYS_FILE; proxy.ratelimit.identity).
    rate_limit_keys: Mapping[str, KeyLimit] = field(default_factory=dict)
    # Tokens per request by route (RATE_LIMIT_COSTS, bounded by RATE_LIMIT_MAX; proxy.ratelimit.costs).
    rate_limit_costs: Mapping[str, float] = field(default_factory=lambda: DEFAULT_COSTS)
    # IPv6 clients share a bucket per network of this prefix length (proxy.ratelimit.identity).
    rate_limit_ipv6_prefix: int = setting(
        "RATE_LIMIT_IPV6_PREFIX", DEFAULT_IPV6_PREFIX, minimum=MIN_IPV6_PREFIX, maximum=MAX_IPV6_PREFIX
    )
    # Buckets' keys in this many hash tags: on a Redis Cluster a batch of decisions is at most this
    # many script calls (proxy.ratelimit.script); changing it moves every bucket to a new key.
    rate_limit_key_groups: int = setting("RATE_LIMIT_KEY_GROUPS", DEFAULT_KEY_GROUPS, minimum=1, maximum=MAX_KEY_GROUPS)
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = setting(
        "TRUSTED_PROXIES", (), read=_networks
    )
    cors_origins: tuple[str, ...] = setting("CORS_ORIGINS", (), read=_origins)
    engine_pool_size: int = setting("ENGINE_POOL_SIZE", 32, minimum=1, maximum=1024)
    engine_timeout_ms: int = setting("ENGINE_TIMEOUT_MS", 2_000, minimum=10, maximum=60_000)
    # The engine guard (proxy.engine_guard): in-flight engine requests per worker (0: the pool
    # size), how long a request may wait for a slot, and the engine's circuit breaker.
    engine_max_in_flight: int = setting("ENGINE_MAX_IN_FLIGHT", 0, minimum=0, maximum=4096)
    engine_queue_ms: int = setting("ENGINE_QUEUE_MS", 25, minimum=0, maximum=10_000)
    engine_breaker_failures: int = setting("ENGINE_BREAKER_FAILURES", 5, minimum=1, maximum=1000)
    engine_breaker_cooldown_ms: int = setting("ENGINE_BREAKER_COOLDOWN_MS", 2_000, minimum=0, maximum=600_000)
    engine_breaker_probes: int = setting("ENGINE_BREAKER_PROBES", 2, minimum=1, maximum=100)
    # The Postgres fallback (proxy.fallback): its own pool, a statement timeout, and a cap on
    # concurrent fallback queries per worker (a request waits at most FALLBACK_QUEUE_MS).
    fallback_enabled: bool = setting("FALLBACK_ENABLED", True)
    fallback_pool_size: int = setting("FALLBACK_POOL_SIZE", 4, minimum=1, maximum=100)
    fallback_max_concurrency: int = setting("FALLBACK_MAX_CONCURRENCY", 4, minimum=1, maximum=1000)
    fallback_queue_ms: int = setting("FALLBACK_QUEUE_MS", 25, minimum=0, maximum=10_000)
    fallback_statement_timeout_ms: int = setting("FALLBACK_STATEMENT_TIMEOUT_MS", 1_000, minimum=10, maximum=60_000)
    # A read replica for the fallback ("" = DATABASE_URL), refused while its replay is more than
    # FALLBACK_MAX_LAG_MS behind (0 = no bound; proxy.fallback.postgres).
    fallback_database_url: str = setting("FALLBACK_DATABASE_URL", "", read=_optional_database_url)
    fallback_max_lag_ms: int = setting("FALLBACK_MAX_LAG_MS", 5_000, minimum=0, maximum=3_600_000)
    # A browse's total and facets from counts each worker holds at most this long (0 = counted
    # in every browse's statement; proxy.fallback.facets). Pages are always read live.
    fallback_facets_max_age_ms: int = setting("FALLBACK_FACETS_MAX_AGE_MS", 5_000, minimum=0, maximum=3_600_000)
    access_log: bool = setting("ACCESS_LOG", False)
    shutdown_timeout_s: float = 10.0
    # Search synonyms (proxy.synonyms); re-read on SIGHUP.
    synonyms_path: Path = setting("SYNONYMS_PATH", DEFAULT_SYNONYMS_PATH, read=lambda env, n, d: _synonyms_path(env, d))
    # Suggestions match fandom and category names against a vocabulary the proxy re-reads from
    # the engine this often (proxy.taxonomy); 0 = the engine counts them on every keystroke.
    suggest_taxonomy_refresh_s: int = setting("SUGGEST_TAXONOMY_REFRESH_S", 60, minimum=0, maximum=86_400)
    # Every Redis call on a request's path (cache tiers) gives up after this.
    redis_timeout_ms: int = setting("REDIS_TIMEOUT_MS", 50, minimum=1, maximum=1_000)
    # The response cache (proxy.cache; the rules are in proxy.cache.freshness).
    cache_enabled: bool = setting("CACHE_ENABLED", True)
    cache_ttl_s: int = setting("CACHE_TTL_S", 60, minimum=1, maximum=86_400)
    cache_revalidate_ms: int = setting("CACHE_REVALIDATE_MS", 15_000, minimum=0)
    cache_refresh_ahead_ms: int = setting("CACHE_REFRESH_AHEAD_MS", 10_000, minimum=0)
    cache_max_stale_ms: int = setting("CACHE_MAX_STALE_MS", 500, minimum=0, maximum=60_000)
    cache_stale_if_error_s: int = setting("CACHE_STALE_IF_ERROR_S", 300, minimum=0, maximum=86_400)
    cache_l1_max_entries: int = setting("CACHE_L1_MAX_ENTRIES", 10_000, minimum=1)
    cache_l1_max_mb: int = setting("CACHE_L1_MAX_MB", 64, minimum=1)
    cache_lock_wait_ms: int = setting("CACHE_LOCK_WAIT_MS", 1_000, minimum=0, maximum=10_000)
    # HTTP caching downstream: browsers and a CDN (proxy.http_caching).
    http_max_age_s: int = setting("HTTP_MAX_AGE_S", 10, minimum=0, maximum=86_400)
    http_stale_while_revalidate_s: int = setting("HTTP_STALE_WHILE_REVALIDATE_S", 30, minimum=0, maximum=86_400)
    http_stale_if_error_s: int = setting("HTTP_STALE_IF_ERROR_S", 300, minimum=0, maximum=604_800)
    http_fallback_max_age_s: int = setting("HTTP_FALLBACK_MAX_AGE_S", 2, minimum=0, maximum=86_400)
    http_cache_scope: str = setting("HTTP_CACHE_SCOPE", "public", read=_one_of(SCOPES))
    cors_max_age_s: int = setting("CORS_MAX_AGE_S", 600, minimum=0, maximum=86_400)
    # Image URLs through the CDN (proxy.images); None: as stored.
    cdn_url: str | None = setting("CDN_URL", None, read=lambda env, n, d: _cdn_url(env))
    cdn_image_widths: tuple[int, ...] = ()
    cdn_image_resize: str = setting("CDN_IMAGE_RESIZE", "query", read=_one_of(RESIZE_SCHEMES))
    # /metrics on an internal listener of the supervisor instead of the public one (0: off).
    metrics_host: str = setting("METRICS_HOST", "127.0.0.1")
    metrics_port: int = setting("METRICS_PORT", 0, minimum=0, maximum=65_535)
    # Client connections (proxy.connections): idle keep-alive, the first request's headers,
    # connections per worker.
    http_keepalive_timeout_s: float = setting("HTTP_KEEPALIVE_TIMEOUT_S", 75.0, minimum=1.0, maximum=3_600.0)
    http_header_timeout_s: float = setting("HTTP_HEADER_TIMEOUT_S", 10.0, minimum=0.1, maximum=300.0)
    http_max_connections: int = setting("HTTP_MAX_CONNECTIONS", 1_000, minimum=1, maximum=100_000)
    # /readyz says each dependency's state; false: the status alone.
    readyz_details: bool = setting("READYZ_DETAILS", True)
    # /readyz reuses one check per worker for this long (proxy.readiness.Recent); 0: every time.
    readyz_cache_ms: int = setting("READYZ_CACHE_MS", 1_000, minimum=0, maximum=60_000)

    # The durations above in seconds (each from its ``_ms`` field).
    engine_timeout = Seconds()
    engine_queue = Seconds()
    engine_breaker_cooldown = Seconds()
    fallback_queue = Seconds()
    redis_timeout = Seconds()
    cache_revalidate = Seconds()
    cache_refresh_ahead = Seconds()
    cache_max_stale = Seconds()
    cache_lock_wait = Seconds()
    readyz_cache = Seconds()

    @property
    def engine_slots(self) -> int:
        return self.engine_max_in_flight or self.engine_pool_size

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ProxySettings:
        values = read_settings(cls, env)
        ttl_ms = values["cache_ttl_s"] * 1000
        # A refresh-ahead window over half the ttl would refresh a hot entry more than twice per ttl.
        for name, most, bound in (
            ("CACHE_REVALIDATE_MS", ttl_ms, "CACHE_TTL_S"),
            ("CACHE_REFRESH_AHEAD_MS", ttl_ms // 2, "half of CACHE_TTL_S"),
        ):
            if values[name.lower()] > most:
                raise ConfigError(f"{name}: must not exceed {bound} ({most} ms), got {values[name.lower()]}")
        return cls(
            **values,
            rate_limit_keys=api_keys_from_env(env),
            rate_limit_costs=costs_from_env(env, values["rate_limit_max"]),
            cdn_image_widths=_cdn_image_widths(env, values["cdn_url"]),
        )


# Widths a CDN is asked to resize to: a few, each a plausible image width in pixels.
_MAX_WIDTHS = 10
_MAX_WIDTH = 10_000


def _cdn_image_widths(env: Mapping[str, str], cdn_url: str | None) -> tuple[int, ...]:
    """``CDN_IMAGE_WIDTHS``: a few widths in pixels for the CDN to resize to (needs ``CDN_URL``)."""
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
    return tuple(sorted(widths))


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


def _synonyms_path(env: Mapping[str, str], default: Path) -> Path:
    """``SYNONYMS_PATH``: a readable file whose synonyms parse, else a ConfigError naming it."""
    raw = env.get("SYNONYMS_PATH", "").strip()
    path = Path(raw) if raw else default
    try:
        load_synonyms(path)
    except OSError as exc:
        raise ConfigError(f"SYNONYMS_PATH: cannot read {path}: {exc.strerror or exc}") from None
    except SynonymError as exc:
        raise ConfigError(f"SYNONYMS_PATH: {path}: {exc}") from None
    return path
