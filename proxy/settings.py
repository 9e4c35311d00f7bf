"""The proxy's settings, read once from the environment at start-up.

Nothing below the entry point reads ``os.environ``: the frozen :class:`ProxySettings` is built
here and handed to :func:`proxy.app.create_app`. A bad value raises ``ConfigError`` naming the
variable.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from catalog.config import (
    database_url,
    elasticsearch_node,
    env_bool,
    env_int,
    env_networks,
    env_str,
    redis_url,
    search_index,
)


@dataclass(frozen=True)
class ProxySettings:
    elasticsearch_node: str = "http://localhost:9200"
    search_index: str = "products"
    database_url: str = "postgresql://postgres@localhost:5432/hos_search"
    redis_url: str = "redis://localhost:6379"
    redis_key_prefix: str = "hos:"
    rate_limit_enabled: bool = True
    rate_limit_max: int = 100
    rate_limit_ttl_ms: int = 60_000
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    cors_origins: tuple[str, ...] = ()
    engine_pool_size: int = 32
    engine_timeout_ms: int = 2_000
    access_log: bool = False
    shutdown_timeout_s: float = 10.0

    @property
    def engine_timeout(self) -> float:
        return self.engine_timeout_ms / 1000

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ProxySettings:
        origins = tuple(o.strip().rstrip("/") for o in env.get("CORS_ORIGINS", "").split(",") if o.strip())
        return cls(
            elasticsearch_node=elasticsearch_node(env),
            search_index=search_index(env),
            database_url=database_url(env),
            redis_url=redis_url(env),
            redis_key_prefix=env_str(env, "REDIS_KEY_PREFIX", "hos:"),
            rate_limit_enabled=env_bool(env, "RATE_LIMIT_ENABLED", True),
            rate_limit_max=env_int(env, "RATE_LIMIT_MAX", 100, minimum=1),
            rate_limit_ttl_ms=env_int(env, "RATE_LIMIT_TTL", 60_000, minimum=1),
            trusted_proxies=env_networks(env, "TRUSTED_PROXIES"),
            cors_origins=origins,
            engine_pool_size=env_int(env, "ENGINE_POOL_SIZE", 32, minimum=1, maximum=1024),
            engine_timeout_ms=env_int(env, "ENGINE_TIMEOUT_MS", 2_000, minimum=10, maximum=60_000),
            access_log=env_bool(env, "ACCESS_LOG", False),
        )
