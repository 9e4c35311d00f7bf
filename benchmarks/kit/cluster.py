"""A Redis Cluster beside the bench's one Redis, for figures that compare the two in the same run.

``with redis_cluster(workdir, children) as cluster:`` starts 3 primaries and 3 replicas of real
``redis-server`` on loopback (``devstack.servers.start_redis_cluster``, node timeout 1 s: a killed
primary's replica takes over within a second or two). On the way out it stops the processes put in
``children`` meanwhile (the proxies using it: a proxy outliving its Redis only logs errors), then
the cluster. :func:`on_cluster` is a proxy's environment moved onto it. :func:`redis_work` reads
what Redis servers (a cluster's nodes, or one Redis) have done so far for the rate limiter.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import redis

from benchmarks.kit.processes import PROXY_STOP_S
from catalog.config import env_bool
from catalog.processes import stop_processes
from devstack.servers import RedisClusterServers, start_redis_cluster


@contextlib.contextmanager
def redis_cluster(workdir: Path, children: list[subprocess.Popen[bytes]]) -> Iterator[RedisClusterServers]:
    """A Redis Cluster in ``workdir / "redis-cluster"`` while the block runs (see the module)."""
    cluster = start_redis_cluster(workdir / "redis-cluster")
    first = len(children)
    try:
        yield cluster
    finally:
        started_meanwhile = children[first:]
        del children[first:]
        try:
            stop_processes(started_meanwhile, PROXY_STOP_S)
        finally:
            cluster.stop()


def on_cluster(env: dict[str, str], cluster: RedisClusterServers, **extra: str) -> dict[str, str]:
    """``env`` (a proxy's, on one Redis) with its Redis the cluster, plus ``extra``.

    Refuses an ``env`` already on a cluster (``DEV_REDIS=cluster``, or ``REDIS_CLUSTER`` set): the
    figure measured beside it would no longer be one Redis's.
    """
    if env_bool(env, "REDIS_CLUSTER", False):
        raise RuntimeError("the bench's own Redis is a cluster already: run it on one Redis (DEV_REDIS=single)")
    return {**env, "REDIS_URL": cluster.url, "REDIS_CLUSTER": "true", **extra}


class RedisWork(NamedTuple):
    """What Redis servers have done so far, summed: CPU seconds, EVALSHA commands, and the rate
    limiter's decisions in them (its script's HMGETs, one per decision)."""

    cpu: float
    evalsha: int
    decisions: int


def redis_work(urls: Sequence[str]) -> RedisWork:
    """:class:`RedisWork` of the servers at ``urls`` (``INFO cpu`` and ``commandstats``); a
    cluster's replicas run no script (scripts replicate as their effects)."""
    cpu = 0.0
    calls = [0, 0]
    for url in urls:
        with redis.Redis.from_url(url, socket_timeout=5) as client:
            used = client.info("cpu")
            stats = client.info("commandstats")
        cpu += float(used["used_cpu_user"]) + float(used["used_cpu_sys"])
        for n, command in enumerate(("evalsha", "hmget")):
            calls[n] += int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))
    return RedisWork(cpu, calls[0], calls[1])
