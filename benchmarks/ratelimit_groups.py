"""Benchmark: what a batch of cold rate-limit decisions costs on a Redis Cluster, by key groups.

    python -m benchmarks.ratelimit_groups [--groups 1,3,8,16,32,64,256] [--batches 1,4,16,64,256]

A bucket key's hash tag is its client's key group (``proxy/ratelimit/script.py``), so a batch of
decisions on a cluster costs one script call per group among its clients. On a Redis Cluster (3
primaries + 3 replicas of real redis-server on loopback), for each number of groups and each batch
size, batches of distinct fresh clients (cold buckets, as a client's first request in a lease's
lifetime) are decided by :meth:`~proxy.ratelimit.script.RedisBuckets.take_many`, and counted:
Python calls per decision (cProfile's count around the calls: not moved by the machine's noise,
unlike their timings, issue 24) and EVALSHA commands per batch (the primaries' ``INFO
commandstats``, summed). The 10,000 clients of ``benchmarks/ratelimit.py`` each had a slot of
their own with the client id as the hash tag: a script call per decision (issue 24).
Everything listens on 127.0.0.1 and is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.kit.cluster import redis_cluster, redis_work
from benchmarks.kit.results import Results
from benchmarks.kit.stack import RedisClusterServers
from catalog.redis_client import RedisClient, open_redis
from proxy.ratelimit.script import RedisBuckets, Take

# Decisions counted per configuration: enough batches that the groups a batch happens to hit average out.
DECISIONS = 2_048
SLOW_REFILL_MS = 3_600_000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ratelimit_groups",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--groups", default="1,3,8,16,32,64,256", help="numbers of key groups, comma-separated")
    parser.add_argument("--batches", default="1,4,16,64,256", help="batch sizes, comma-separated")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    groups = [int(n) for n in args.groups.split(",")]
    batches = [int(n) for n in args.batches.split(",")]
    results = Results("ratelimit_groups")
    with (
        tempfile.TemporaryDirectory(prefix="ratelimit-groups-") as workdir,
        redis_cluster(Path(workdir), []) as cluster,
    ):
        rows = measure(cluster, {f"{n} groups": _groups(n) for n in groups}, batches)
    print(f"\n{'':<12}" + "".join(f"{'batch of ' + str(b):>24}" for b in batches))
    print(f"{'':<12}" + f"{'calls/decision, EVALSHA':>24}" * len(batches))
    for name, by_batch in rows.items():
        print(f"{name:<12}" + "".join(f"{calls:>15.1f} {evalsha:>8.2f}" for calls, evalsha in by_batch.values()))
        for batch, (calls, evalsha) in by_batch.items():
            results.add(
                f"Python calls per cold decision on a Redis Cluster, {name}, batches of {batch}",
                calls,
                "calls",
                notes=f"{evalsha:.2f} EVALSHA per batch; counted, not timed; 3 primaries + 3 replicas",
            )
    if args.json:
        results.write(args.json)
    return 0


def _groups(n: int) -> Callable[[RedisClient, str], RedisBuckets]:
    return lambda client, prefix: RedisBuckets(client, prefix, n)


def measure(
    cluster: RedisClusterServers, makers: dict[str, Callable[[RedisClient, str], RedisBuckets]], batches: list[int]
) -> dict[str, dict[int, tuple[float, float]]]:
    """For each way of making the buckets and each batch size: (Python calls per decision, EVALSHA
    commands per batch)."""
    return asyncio.run(_measure(cluster, makers, batches))


async def _measure(
    cluster: RedisClusterServers, makers: dict[str, Callable[[RedisClient, str], RedisBuckets]], batches: list[int]
) -> dict[str, dict[int, tuple[float, float]]]:
    client = open_redis(cluster.url, cluster=True, max_connections=4)
    rows: dict[str, dict[int, tuple[float, float]]] = {}
    try:
        for name, make in makers.items():
            buckets = make(client, f"b{uuid.uuid4().hex[:8]}:")
            await buckets.take("warm-up", 1, 5, SLOW_REFILL_MS)  # the connections and the script cache
            rows[name] = {}
            for batch in batches:
                # Random ids: consecutive ones ("….1", "….2") fall in groups more evenly than chance.
                clients = [f"ip:{uuid.uuid4().hex[:12]}" for _ in range(DECISIONS)]
                before = evalsha_calls(cluster)
                profiler = cProfile.Profile()
                for start in range(0, DECISIONS, batch):
                    takes = [Take(one, 1, 100, SLOW_REFILL_MS) for one in clients[start : start + batch]]
                    profiler.enable()
                    await buckets.take_many(takes)
                    profiler.disable()
                calls = sum(row[1] for row in pstats.Stats(profiler).stats.values())  # type: ignore[attr-defined]
                rows[name][batch] = (calls / DECISIONS, (evalsha_calls(cluster) - before) / (DECISIONS / batch))
                print(f"{name}, batches of {batch}: {rows[name][batch][0]:.1f} calls per decision", flush=True)
    finally:
        await client.aclose()
    return rows


def evalsha_calls(cluster: RedisClusterServers) -> int:
    """EVALSHA commands the cluster's running nodes have run."""
    return redis_work([node.url for node in cluster.nodes if node.running()]).evalsha


if __name__ == "__main__":
    sys.exit(main())
