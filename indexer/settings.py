"""The indexer's settings, read once from the environment at start-up.

Nothing below the entry point reads ``os.environ``: the frozen :class:`IndexerSettings` is
built here and passed down. A bad value raises ``ConfigError`` naming the variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from catalog.config import (
    DEFAULT_DATABASE_URL,
    DEFAULT_ELASTICSEARCH_NODE,
    DEFAULT_REDIS_KEY_PREFIX,
    DEFAULT_REDIS_URL,
    DEFAULT_SEARCH_INDEX,
    ConfigError,
    EngineAccess,
    env_bool,
    env_float,
    env_int,
    env_interval,
    env_str,
    shared_settings,
)
from catalog.mapping import DEFAULT_REFRESH_INTERVAL


@dataclass(frozen=True)
class IndexerSettings:
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str = DEFAULT_REDIS_URL
    redis_key_prefix: str = DEFAULT_REDIS_KEY_PREFIX
    elasticsearch_node: str = DEFAULT_ELASTICSEARCH_NODE
    engine_access: EngineAccess = field(default_factory=EngineAccess)
    search_index: str = DEFAULT_SEARCH_INDEX
    sync_on_startup: bool = False
    name: str = "main"  # INDEXER_NAME: the stream's checkpoint row, which a completed reindex advances
    batch_size: int = 500  # outbox changes per batch: the stream's, and a reindex's replays
    linger_ms: int = 50
    metrics_port: int = 9187
    # Loopback by default; a container sets 0.0.0.0 so Prometheus can scrape it.
    metrics_host: str = "127.0.0.1"
    # One replica by default: production Elasticsearch should survive losing a node. A
    # single-node engine just reports yellow health; set 0 there to keep it green.
    index_replicas: int = 1
    # Primary shards of an index this indexer builds (fixed for its life; a reindex changes it).
    index_shards: int = 1
    # How soon a write becomes searchable on the engine (its refresh_interval), for every index
    # this indexer puts live; applied to the live index at each start too.
    refresh_interval: str = DEFAULT_REFRESH_INTERVAL
    keepalive_s: float = 5.0
    bulk_timeout_s: float = 30.0
    prune_interval_s: float = 10.0
    # The election lock's lease (indexer.election): Postgres ends a holder's session after this
    # long without hearing from it, and a standby takes over.
    lease_s: float = 10.0

    @property
    def linger(self) -> float:
        return self.linger_ms / 1000

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> IndexerSettings:
        name = env_str(env, "INDEXER_NAME", "main")
        if len(name) > 100 or name.startswith("reindex:"):
            raise ConfigError(f"INDEXER_NAME={name!r} must be at most 100 characters and not start with 'reindex:'")
        return cls(
            **shared_settings(env),
            sync_on_startup=env_bool(env, "SYNC_PRODUCTS_ON_STARTUP", False),
            name=name,
            batch_size=env_int(env, "INDEXER_BATCH_SIZE", 500, minimum=1, maximum=10_000),
            linger_ms=env_int(env, "INDEXER_LINGER_MS", 50, minimum=0, maximum=10_000),
            metrics_port=env_int(env, "INDEXER_METRICS_PORT", 9187, minimum=0, maximum=65535),
            metrics_host=env_str(env, "INDEXER_METRICS_HOST", "127.0.0.1"),
            index_replicas=env_int(env, "SEARCH_INDEX_REPLICAS", 1, minimum=0, maximum=10),
            # The engine's own limit is 1024; more than a few hundred shards for one catalog is a typo.
            index_shards=env_int(env, "SEARCH_INDEX_SHARDS", 1, minimum=1, maximum=256),
            refresh_interval=env_interval(env, "SEARCH_INDEX_REFRESH_INTERVAL", DEFAULT_REFRESH_INTERVAL),
            keepalive_s=env_float(env, "INDEXER_KEEPALIVE_S", 5.0, minimum=0.1),
            bulk_timeout_s=env_float(env, "INDEXER_BULK_TIMEOUT_S", 30.0, minimum=0.1),
            prune_interval_s=env_float(env, "INDEXER_PRUNE_INTERVAL_S", 10.0, minimum=0.1),
            lease_s=_lease(env),
        )


def _lease(env: Mapping[str, str]) -> float:
    seconds = env_float(env, "INDEXER_LEASE_S", 10.0, minimum=1.0)
    if seconds > 3600:  # idle_session_timeout is milliseconds in an int; an hour is already no lease
        raise ConfigError(f"INDEXER_LEASE_S={seconds:g} is above the maximum of 3600")
    return seconds
