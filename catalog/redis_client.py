"""Opening Redis clients: one Redis server, or a Redis Cluster, as the configuration says.

``REDIS_CLUSTER=true`` names a cluster explicitly (nothing is guessed at start-up, so a Redis
that is down when a process starts cannot make it pick the wrong client); ``REDIS_URL`` then
lists one or more of its nodes, comma-separated, as seeds — the client learns the others and
the slot table from them, and learns them again after a failover. On one server only the
first URL is used.

The proxy and the indexer both open their clients here, each with the timeouts and pool that
its path needs. Pure wiring: no client is kept here, and nothing runs at import time.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import parse_url
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError

# Either client: they share the commands the services use (GET, SET, pipelines, EVALSHA, ...).
RedisClient = aioredis.Redis | RedisCluster

# Every way a Redis call fails. The cluster client's RedisClusterException (no node reachable, a
# slot not covered) is no RedisError: caught as one, it answered a request with a 500 when every
# node of a cluster was gone (seen in load/bench_cache.py --only cluster).
REDIS_ERRORS: Final = (RedisError, RedisClusterException, OSError, TimeoutError)


def node_urls(redis_url: str) -> list[str]:
    """The URLs that ``REDIS_URL`` lists (one, or several comma-separated)."""
    return [part.strip() for part in redis_url.split(",") if part.strip()]


def open_redis(
    redis_url: str,
    *,
    cluster: bool,
    max_connections: int,
    blocking: bool = False,
    **options: Any,
) -> RedisClient:
    """A client for ``redis_url``; ``options`` go to each connection (timeouts, ``retry``, ...).

    ``blocking``: on one server, a burst waits (within ``timeout``) for a pooled connection
    instead of failing when ``max_connections`` are out. A cluster client's pools are per node
    and do not block: ``max_connections`` is per node there.
    """
    urls = node_urls(redis_url)
    if not cluster:
        pool_class = aioredis.BlockingConnectionPool if blocking else aioredis.ConnectionPool
        if not blocking:
            options.pop("timeout", None)
        pool = pool_class.from_url(urls[0], max_connections=max_connections, **options)
        return aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes it
    options.pop("timeout", None)
    # Credentials and TLS come from the first URL; every node of a cluster shares them.
    kwargs: dict[str, Any] = dict(parse_url(urls[0]))
    kwargs.pop("host", None)
    kwargs.pop("port", None)
    kwargs.pop("db", None)
    if kwargs.pop("connection_class", None) is aioredis.SSLConnection:
        kwargs["ssl"] = True
    seeds = [ClusterNode(urlsplit(url).hostname or "localhost", urlsplit(url).port or 6379) for url in urls]
    return RedisCluster(startup_nodes=seeds, max_connections=max_connections, **kwargs, **options)


def subscription_urls(client: RedisClient, redis_url: str) -> list[str]:
    """Where a subscriber may listen, best first: every node of a cluster as the client knows
    them now (a classic PUBLISH reaches every node of a cluster, so any one will do), or the one
    server. Each keeps the credentials and scheme of ``redis_url``'s first URL."""
    first = node_urls(redis_url)[0]
    if not isinstance(client, RedisCluster):
        return [first]
    nodes = client.get_nodes() or []
    if not nodes:  # not initialised yet: the seeds
        return node_urls(redis_url)
    return [_with_address(first, node.host, int(node.port)) for node in nodes]


def _with_address(url: str, host: str, port: int) -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{host}:{port}" if credentials else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc, path=""))


def slot_of(key: str) -> int:
    """The Redis Cluster hash slot of ``key`` (its ``{hash tag}`` only, where it has one)."""
    return key_slot(key.encode())
