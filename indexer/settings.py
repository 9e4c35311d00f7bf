"""The indexer's settings, read once from the environment at start-up.

Nothing below the entry point reads ``os.environ``: the frozen :class:`IndexerSettings` is
built here and passed down. A bad value raises ``ConfigError`` naming the variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from catalog.config import ConfigError, Seconds, SharedSettings, env_interval, env_str, read_settings, setting
from catalog.mapping import DEFAULT_REFRESH_INTERVAL

# A week: an indexer down for maintenance keeps its place; one retired stops holding pruning back.
DEFAULT_CHECKPOINT_EXPIRY_S = 7 * 86_400.0
# Several prune intervals at least, so that a live indexer is never taken for an abandoned one.
MIN_CHECKPOINT_EXPIRY_S = 300.0


def _name(env: Mapping[str, str], name: str, default: str) -> str:
    value = env_str(env, name, default)
    if len(value) > 100 or value.startswith("reindex:"):
        raise ConfigError(f"{name}={value!r} must be at most 100 characters and not start with 'reindex:'")
    return value


@dataclass(frozen=True)
class IndexerSettings(SharedSettings):
    """Every setting of the indexer, each field's variable, default and bounds declared once
    (:func:`catalog.config.setting`)."""

    sync_on_startup: bool = setting("SYNC_PRODUCTS_ON_STARTUP", False)
    # The stream's checkpoint row, which a completed reindex advances.
    name: str = setting("INDEXER_NAME", "main", read=_name)
    # Outbox changes per batch: the stream's, and a reindex's replays.
    batch_size: int = setting("INDEXER_BATCH_SIZE", 500, minimum=1, maximum=10_000)
    linger_ms: int = setting("INDEXER_LINGER_MS", 50, minimum=0, maximum=10_000)
    metrics_port: int = setting("INDEXER_METRICS_PORT", 9187, minimum=0, maximum=65535)
    # Loopback by default; a container sets 0.0.0.0 so Prometheus can scrape it.
    metrics_host: str = setting("INDEXER_METRICS_HOST", "127.0.0.1")
    # One replica by default: production Elasticsearch should survive losing a node. A
    # single-node engine just reports yellow health; set 0 there to keep it green.
    index_replicas: int = setting("SEARCH_INDEX_REPLICAS", 1, minimum=0, maximum=10)
    # Primary shards of an index this indexer builds (fixed for its life; a reindex changes it).
    # The engine's own limit is 1024; more than a few hundred shards for one catalog is a typo.
    index_shards: int = setting("SEARCH_INDEX_SHARDS", 1, minimum=1, maximum=256)
    # How soon a write becomes searchable on the engine (its refresh_interval), for every index
    # this indexer puts live; applied to the live index at each start too.
    refresh_interval: str = setting("SEARCH_INDEX_REFRESH_INTERVAL", DEFAULT_REFRESH_INTERVAL, read=env_interval)
    keepalive_s: float = setting("INDEXER_KEEPALIVE_S", 5.0, minimum=0.1)
    bulk_timeout_s: float = setting("INDEXER_BULK_TIMEOUT_S", 30.0, minimum=0.1)
    prune_interval_s: float = setting("INDEXER_PRUNE_INTERVAL_S", 10.0, minimum=0.1)
    # Another indexer name's checkpoint not seen for this long is deleted (indexer.checkpoint).
    checkpoint_expiry_s: float = setting(
        "INDEXER_CHECKPOINT_EXPIRY_S", DEFAULT_CHECKPOINT_EXPIRY_S, minimum=MIN_CHECKPOINT_EXPIRY_S
    )
    # The election lock's lease (indexer.election): Postgres ends a holder's session after this
    # long without hearing from it, and a standby takes over. At most an hour:
    # idle_session_timeout is milliseconds in an int, and an hour is already no lease.
    lease_s: float = setting("INDEXER_LEASE_S", 10.0, minimum=1.0, maximum=3600.0)

    linger = Seconds()  # linger_ms in seconds

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> IndexerSettings:
        return cls(**read_settings(cls, env))
