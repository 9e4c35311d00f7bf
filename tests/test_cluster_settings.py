"""The settings of a Redis Cluster and of the fallback's read replica, and ``DEV_REDIS=cluster``."""

from __future__ import annotations

import os

import pytest

from catalog.config import ConfigError
from catalog.redis_client import node_urls, open_redis, subscription_urls
from devstack.servers import ServerError
from devstack.stack import DevStack, StackUrls, dev_redis
from indexer.settings import IndexerSettings
from proxy.settings import ProxySettings

NODES = "redis://:pw@10.0.0.1:6379,redis://:pw@10.0.0.2:6380"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"REDIS_CLUSTER": "sometimes"}, "REDIS_CLUSTER"),
        ({"REDIS_URL": "redis://a:6379,http://b:6379"}, "REDIS_URL"),
        ({"REDIS_URL": "redis://a:6379,redis://b:99999"}, "REDIS_URL"),
        ({"FALLBACK_DATABASE_URL": "mysql://replica/db"}, "FALLBACK_DATABASE_URL"),
        ({"FALLBACK_MAX_LAG_MS": "-1"}, "FALLBACK_MAX_LAG_MS"),
        ({"FALLBACK_MAX_LAG_MS": "soon"}, "FALLBACK_MAX_LAG_MS"),
    ],
)
def test_bad_cluster_and_replica_settings_name_their_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        ProxySettings.from_env(env)


def test_a_cluster_is_named_explicitly_in_proxy_and_indexer_alike() -> None:
    env = {"REDIS_URL": NODES, "REDIS_CLUSTER": "true"}
    proxy, indexer = ProxySettings.from_env(env), IndexerSettings.from_env(env)
    assert (proxy.redis_cluster, indexer.redis_cluster) == (True, True)
    assert proxy.redis_url == indexer.redis_url == NODES
    assert ProxySettings.from_env({"REDIS_URL": NODES}).redis_cluster is False  # never guessed


def test_the_fallback_reads_database_url_unless_a_replica_is_named() -> None:
    plain = ProxySettings.from_env({"DATABASE_URL": "postgresql://primary/db"})
    assert (plain.fallback_database_url, plain.fallback_max_lag_ms) == ("", 5_000)
    replica = ProxySettings.from_env({"FALLBACK_DATABASE_URL": "postgresql://replica/db", "FALLBACK_MAX_LAG_MS": "250"})
    assert (replica.fallback_database_url, replica.fallback_max_lag_ms) == ("postgresql://replica/db", 250)


async def test_a_cluster_client_is_seeded_with_every_listed_node_and_subscribes_with_its_credentials() -> None:
    assert node_urls(NODES + ", ") == ["redis://:pw@10.0.0.1:6379", "redis://:pw@10.0.0.2:6380"]
    client = open_redis(NODES, cluster=True, max_connections=2)
    try:
        # Not initialised (nothing is reachable at these addresses): the seeds, as given.
        assert subscription_urls(client, NODES) == node_urls(NODES)
    finally:
        await client.aclose()
    single = open_redis("redis://localhost:6379/0", cluster=False, max_connections=2)
    try:
        assert subscription_urls(single, "redis://localhost:6379/0") == ["redis://localhost:6379/0"]
    finally:
        await single.aclose()


def test_dev_redis_is_single_or_cluster() -> None:
    assert dev_redis({}) == "single"
    assert dev_redis({"DEV_REDIS": "Cluster"}) == "cluster"
    with pytest.raises(ServerError, match="DEV_REDIS"):
        dev_redis({"DEV_REDIS": "sentinel"})


def test_dev_redis_cluster_starts_six_nodes_and_says_so_in_the_urls(stack_urls: StackUrls) -> None:
    env = {
        **os.environ,
        "DEV_REDIS": "cluster",
        "DATABASE_URL": stack_urls.database_url,
        "ELASTICSEARCH_NODE": stack_urls.elasticsearch_node,
    }
    env.pop("REDIS_URL", None)
    stack = DevStack(env)
    try:
        urls = stack.start()
        assert stack.redis_cluster is not None
        assert len(stack.pids()) == 6 and all(node.running() for node in stack.redis_cluster.nodes)
        assert urls.as_env()["REDIS_CLUSTER"] == "true" and len(node_urls(urls.redis_url)) == 6
        settings = ProxySettings.from_env(urls.as_env())
        assert settings.redis_cluster and settings.redis_url == urls.redis_url
        nodes = list(stack.redis_cluster.nodes)
    finally:
        stack.close()
    assert not any(node.running() for node in nodes)
