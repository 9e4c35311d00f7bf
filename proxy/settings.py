"""The proxy's settings, read once from the environment at start-up.

Nothing below the entry point reads ``os.environ``: the frozen :class:`ProxySettings` is built
here and handed to :func:`proxy.app.create_app`. A bad value raises ``ConfigError`` naming the
variable.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from catalog.config import (
    DEFAULT_DATABASE_URL,
    DEFAULT_ELASTICSEARCH_NODE,
    DEFAULT_REDIS_KEY_PREFIX,
    DEFAULT_REDIS_URL,
    DEFAULT_SEARCH_INDEX,
    ConfigError,
    env_bool,
    env_int,
    env_networks,
    shared_settings,
)
from proxy.synonyms import DEFAULT_SYNONYMS_PATH, SynonymError, load_synonyms


@dataclass(frozen=True)
class ProxySettings:
    elasticsearch_node: str = DEFAULT_ELASTICSEARCH_NODE
    search_index: str = DEFAULT_SEARCH_INDEX
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    redis_key_prefix: str = DEFAULT_REDIS_KEY_PREFIX
    rate_limit_enabled: bool = True
    rate_limit_max: int = 100
    rate_limit_ttl_ms: int = 60_000
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    cors_origins: tuple[str, ...] = ()
    engine_pool_size: int = 32
    engine_timeout_ms: int = 2_000
    access_log: bool = False
    shutdown_timeout_s: float = 10.0
    # Search synonyms (proxy.synonyms); re-read on SIGHUP.
    synonyms_path: Path = DEFAULT_SYNONYMS_PATH

    @property
    def engine_timeout(self) -> float:
        return self.engine_timeout_ms / 1000

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ProxySettings:
        origins = tuple(o.strip().rstrip("/") for o in env.get("CORS_ORIGINS", "").split(",") if o.strip())
        return cls(
            **shared_settings(env),
            rate_limit_enabled=env_bool(env, "RATE_LIMIT_ENABLED", True),
            rate_limit_max=env_int(env, "RATE_LIMIT_MAX", 100, minimum=1),
            rate_limit_ttl_ms=env_int(env, "RATE_LIMIT_TTL", 60_000, minimum=1),
            trusted_proxies=env_networks(env, "TRUSTED_PROXIES"),
            cors_origins=origins,
            engine_pool_size=env_int(env, "ENGINE_POOL_SIZE", 32, minimum=1, maximum=1024),
            engine_timeout_ms=env_int(env, "ENGINE_TIMEOUT_MS", 2_000, minimum=10, maximum=60_000),
            access_log=env_bool(env, "ACCESS_LOG", False),
            synonyms_path=_synonyms_path(env),
        )


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
