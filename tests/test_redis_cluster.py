"""The cache and the rate limiter on a real Redis Cluster (3 primaries + 3 replicas on loopback).

One cluster for the module (``devstack.servers.start_redis_cluster``); the engine and Postgres
are the session's. Each test uses a key prefix of its own, so they share the cluster safely. The
failover test runs last: it kills a primary, and the cluster goes on with what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
import redis
from aiohttp.test_utils import TestClient, TestServer
from elasticsearch import AsyncElasticsearch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalog.redis_client import open_redis, slot_of
from devstack.servers import RedisClusterServers, ServerProcess, start_redis_cluster
from devstack.stack import StackUrls
from proxy.app import SETTINGS, create_app
from proxy.ratelimit.bucket import Bucket, take
from proxy.ratelimit.identity import KeyLimit
from proxy.ratelimit.script import DEFAULT_KEY_GROUPS, RedisBuckets, Take, bucket_key, group_tags
from proxy.routes import LIMITER
from tests.conftest import SearchCatalog, proxy_settings
from tests.indexer_support import add_product, add_seller, indexer_settings, running_indexer
from tests.proxy_support import (
    VISIBLE_WITHIN_S,
    following,
    one_engine_search_for_a_hundred_cold_requests,
    proxy_env,
    spawn_proxy,
    visible_after,
    wait_healthy,
)

SLOW_REFILL_MS = 3_600_000  # an hour: nothing refills within a test
LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    servers = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture
def cluster_urls(stack_urls: StackUrls, cluster: RedisClusterServers) -> StackUrls:
    """The session's Postgres and engine, with the module's Redis Cluster."""
    return replace(stack_urls, redis_url=cluster.url, redis_cluster=True)


def _primaries(cluster: RedisClusterServers) -> list[ServerProcess]:
    ports = set()
    for node in cluster.nodes:
        if node.running():
            with redis.Redis.from_url(node.url, socket_timeout=2) as client:
                for _start, _end, primary, *_ in client.execute_command("CLUSTER SLOTS"):
                    ports.add(int(primary[1]))
                break
    return [cluster.node(port) for port in sorted(ports)]


def _keys_on(node: ServerProcess, pattern: str) -> list[bytes]:
    with redis.Redis.from_url(node.url, socket_timeout=2) as client:
        return list(client.scan_iter(match=pattern, count=1000))


# --- the limiter's script, split by slot ---------------------------------------------------------


def _evalsha_calls(cluster: RedisClusterServers) -> int:
    """EVALSHA commands the primaries have run (a replica runs none: scripts replicate as effects)."""
    total = 0
    for primary in _primaries(cluster):
        with redis.Redis.from_url(primary.url, socket_timeout=2) as client:
            total += int(client.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
    return total


async def test_a_batch_of_many_clients_is_decided_on_a_cluster_in_order_exactly_and_in_a_script_call_per_key_group(
    cluster: RedisClusterServers,
) -> None:
    """Issue 24: with the client as the hash tag, 600 clients made ~600 script calls (one per slot);
    with key groups, at most one per group, however many clients."""
    client = open_redis(cluster.url, cluster=True, max_connections=4)
    prefix = f"t{uuid.uuid4().hex[:10]}:"
    try:
        buckets = RedisBuckets(client, prefix)
        await buckets.take("warm-up", 1, 2, SLOW_REFILL_MS)  # the script cache of every primary it needs
        ids = [f"ip:10.1.{n // 250}.{n % 250}" for n in range(600)]
        # Each client asks three times in one batch, capacity 2: the third is refused, in order.
        takes = [Take(one, 1, 2, SLOW_REFILL_MS) for _ in range(3) for one in ids]
        before = _evalsha_calls(cluster)
        decisions = await buckets.take_many(takes, now_ms=1_000_000)
        calls = _evalsha_calls(cluster) - before
        assert 1 <= calls <= DEFAULT_KEY_GROUPS, calls
        allowed = [decision.allowed for decision in decisions]
        assert allowed == [True] * 1200 + [False] * 600
        assert [decision.remaining for decision in decisions[:600]] == [1] * 600
        # Every primary holds some of the buckets: the groups' slots are spread over the cluster.
        for primary in _primaries(cluster):
            assert _keys_on(primary, f"{prefix}ratelimit:*"), primary.url
    finally:
        await client.aclose()


# Few groups and many clients: most groups hold several clients, each asking several times.
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    groups=st.sampled_from([1, 2, 3, 5]),
    takes=st.lists(
        st.tuples(st.integers(min_value=0, max_value=39), st.sampled_from([0, 0.5, 1, 2, 7]), st.sampled_from([0, 1])),
        min_size=1,
        max_size=150,
    ),
    capacity=st.sampled_from([1, 3, 10]),
)
async def test_on_a_cluster_a_batch_over_many_clients_per_group_decides_as_take_in_order(
    cluster: RedisClusterServers, groups: int, takes: list[tuple[int, float, float]], capacity: int
) -> None:
    client = open_redis(cluster.url, cluster=True, max_connections=4)
    try:
        buckets = RedisBuckets(client, f"t{uuid.uuid4().hex[:10]}:", groups)  # fresh buckets per example
        batch = [Take(f"ip:10.4.0.{who}", cost, capacity, 1000, lease) for who, cost, lease in takes]
        decided = await buckets.take_many(batch, now_ms=1_000_000)
    finally:
        await client.aclose()
    bucket: dict[int, Bucket | None] = {}
    expected = []
    for who, cost, lease in takes:
        mine = take(bucket.get(who), 1_000_000, cost, capacity, 1000, lease)
        bucket[who] = mine.bucket
        expected.append(mine)
    assert decided == expected


# --- the limiter through the proxy ---------------------------------------------------------------


async def test_two_hundred_requests_of_one_client_over_two_workers_admit_exactly_its_budget_while_a_thousand_others_get_theirs(  # noqa: E501
    search_catalog: SearchCatalog, cluster_urls: StackUrls, cluster: RedisClusterServers
) -> None:
    env = proxy_env(
        search_catalog,
        cluster_urls,
        RATE_LIMIT_ENABLED="true",
        RATE_LIMIT_MAX="20",
        RATE_LIMIT_TTL="60000",
        TRUSTED_PROXIES="127.0.0.1/32",
        REDIS_TIMEOUT_MS="1000",  # exactness is the point here, not the timeout: no fallback
        RATE_LIMIT_KEY_GROUPS="3",  # one group per primary (their slots are spread evenly)
    )
    prefix = env["REDIS_KEY_PREFIX"]
    proc, url = spawn_proxy(env, workers=2)
    try:
        await wait_healthy(url, proc)
        connector = aiohttp.TCPConnector(limit=0, force_close=True)  # spread over both workers
        async with aiohttp.ClientSession(url, connector=connector) as session:
            await (await session.get("/api/search?q=wand")).read()  # the answer cached once
            others = asyncio.Semaphore(50)

            async def one(address: str, gate: asyncio.Semaphore | None = None) -> int:
                headers = {"X-Forwarded-For": address}
                async with (
                    gate or contextlib.nullcontext(),
                    session.get("/api/search?q=wand", headers=headers) as answer,
                ):
                    await answer.read()
                    return answer.status

            started = time.monotonic()
            hot = asyncio.gather(*(one("198.51.100.7") for _ in range(200)))
            rest = asyncio.gather(*(one(f"10.2.{n // 250}.{n % 250}", others) for n in range(1000)))
            hot_statuses, other_statuses = await asyncio.gather(hot, rest)
            elapsed_ms = (time.monotonic() - started) * 1000
        allowance = int(elapsed_ms * 20 / 60_000)  # the refill the test's own duration allows
        assert 20 <= hot_statuses.count(200) <= 20 + allowance, (hot_statuses.count(200), allowance)
        assert set(hot_statuses) == {200, 429}
        assert other_statuses == [200] * 1000  # each its own bucket, on whichever node it lives
        keys = {primary.url: _keys_on(primary, f"{prefix}ratelimit:*") for primary in _primaries(cluster)}
        assert all(keys.values()), keys.keys()
        # The setting reached the proxy: every key in one of its 3 groups; 1,002 buckets (the hot
        # client, the thousand others, and the peer's own, which asked for the first answer).
        tags = {key.decode().split("{")[1].split("}")[0] for node_keys in keys.values() for key in node_keys}
        assert tags == set(group_tags(3)), tags
        assert sum(len(node_keys) for node_keys in keys.values()) == 1002
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)


# --- the cache -----------------------------------------------------------------------------------


async def test_on_a_cluster_a_miss_becomes_a_hit_and_a_price_change_shows_within_two_seconds(
    cluster_urls: StackUrls, database_url: str, index_alias: str, db: asyncpg.Connection
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}:"
    seller = await add_seller(db, "Ollivanders")
    wand = await add_product(db, seller, "Elder Wand", price=30.0)
    settings = indexer_settings(cluster_urls, database_url, index_alias, prefix)
    async with running_indexer(settings, reindex_on_start=True):
        catalog = SearchCatalog(database_url, index_alias, index_alias)
        app = create_app(proxy_settings(catalog, cluster_urls, redis_key_prefix=prefix))
        async with TestClient(TestServer(app)) as client:
            await following(client)
            search = "/api/search?q=wand"
            first = await client.get(search)
            await first.read()
            second = await client.get(search)
            await second.read()
            assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")

            started = time.monotonic()
            await db.execute("UPDATE products SET price = 35.5 WHERE id = $1", wand)

            def new_price_listed(status: int, body: Any) -> bool:
                return any(item["id"] == str(wand) and item["price"] == 35.5 for item in body["items"])

            listed = await visible_after(client, search, new_price_listed, started)
            assert listed <= VISIBLE_WITHIN_S, listed


async def test_on_a_cluster_a_hundred_identical_cold_requests_over_two_workers_make_one_engine_search(
    search_catalog: SearchCatalog, cluster_urls: StackUrls, engine: AsyncElasticsearch
) -> None:
    await one_engine_search_for_a_hundred_cold_requests(search_catalog, cluster_urls, engine)


# --- failover (last: it kills a primary) ---------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="session")
async def limited_on_cluster(search_catalog: SearchCatalog, cluster_urls: StackUrls) -> AsyncIterator[TestClient]:
    settings = proxy_settings(
        search_catalog,
        cluster_urls,
        rate_limit_enabled=True,
        rate_limit_max=20,
        rate_limit_ttl_ms=SLOW_REFILL_MS,
        trusted_proxies=LOOPBACK,
        http_cache_scope="private",
        redis_timeout_ms=REDIS_TIMEOUT_MS,
        # A partner far from its limit: served from leases, whose round trips fail in the failover.
        # Leases of 50 tokens (refilled in 50 ms) are spent, and asked for again, every few
        # bursts of the traffic below: a lease of a bigger bucket would outlast the failover.
        rate_limit_keys={PARTNER_KEY: KeyLimit(1_000, 1_000)},
    )
    async with TestClient(TestServer(create_app(settings))) as client:
        await following(client)
        yield client


REDIS_TIMEOUT_MS = 300
PARTNER_KEY = "partner-acme-7Hq2xLp9Vw"


async def test_killing_the_primary_of_a_hot_client_s_slot_costs_no_5xx_and_no_wait_and_the_limit_is_exact_again(
    limited_on_cluster: TestClient, cluster: RedisClusterServers
) -> None:
    client = limited_on_cluster
    limiter = client.app[LIMITER]
    prefix = client.app[SETTINGS].redis_key_prefix
    hot = "198.51.100.9"
    path = "/api/search?q=wand"
    await (await client.get(path, headers={"X-Forwarded-For": hot})).read()
    (hot_key,) = [key for node in _primaries(cluster) for key in _keys_on(node, f"{prefix}ratelimit:*")]
    victim = cluster.primary_of(slot_of(hot_key.decode()))

    timings: list[tuple[float, int]] = []

    async def one(headers: dict[str, str]) -> None:
        started = time.monotonic()
        response = await client.get(path, headers=headers)
        await response.read()
        timings.append((time.monotonic() - started, response.status))

    async def traffic(seconds: float) -> None:
        until = time.monotonic() + seconds
        hot_client, partner = {"X-Forwarded-For": hot}, {"X-API-Key": PARTNER_KEY}
        while time.monotonic() < until:
            await asyncio.gather(*(one(hot_client) for _ in range(4)), *(one(partner) for _ in range(4)))

    await traffic(0.5)
    victim.process.kill()
    victim.process.wait(10)
    killed_at = time.monotonic()
    await traffic(1.0)
    # Requests go on while the replica takes over; then the limiter must be back on Redis.
    while not (limiter.breaker.closed and cluster_healthy(cluster)):
        assert time.monotonic() - killed_at < 30, "the limiter did not return to Redis within 30 s"
        await traffic(0.2)
    await traffic(0.5)
    statuses = {status for _, status in timings}
    assert statuses <= {200, 429}, statuses
    slowest = max(elapsed for elapsed, _ in timings)
    # One Redis timeout and the machine's own lag: a clean-clone CI run (three Redis pairs and
    # the engine on two cores) saw 0.46 s with a 0.3 s timeout; a wait for the failover itself
    # would take seconds.
    assert slowest <= REDIS_TIMEOUT_MS / 1000 + 0.25, slowest

    # Exact again, on the promoted node: a fresh client whose bucket lives there.
    promoted = cluster.primary_of(slot_of(hot_key.decode()))
    assert promoted is not victim
    owners = cluster.slot_owners()
    fresh_clients = (
        address
        for address in (f"10.3.{n // 250}.{n % 250}" for n in range(20_000))
        if owners[slot_of(bucket_key(prefix, "ip:" + address))] is promoted
    )
    # Up to three fresh clients: on a busy CI machine one slow Redis call after the failover can
    # open the breaker again, and a client decided meanwhile is decided exactly but locally (a
    # full run once saw the right statuses and no key). Never on Redis in three tries fails.
    attempts: list[tuple[list[int], bool]] = []
    for fresh in itertools.islice(fresh_clients, 3):
        while not limiter.breaker.closed:
            assert time.monotonic() - killed_at < 60, "the limiter did not stay back on Redis"
            await asyncio.sleep(0.1)
        statuses_in_order = []
        for _ in range(25):
            response = await client.get(path, headers={"X-Forwarded-For": fresh})
            await response.read()
            statuses_in_order.append(response.status)
        on_promoted = bool(_keys_on(promoted, bucket_key(prefix, "ip:" + fresh)))  # decided on Redis there
        attempts.append((statuses_in_order, on_promoted))
        if on_promoted:
            break
    statuses_in_order, on_promoted = attempts[-1]
    assert statuses_in_order == [200] * 20 + [429] * 5, attempts
    assert on_promoted, attempts


def cluster_healthy(cluster: RedisClusterServers) -> bool:
    try:
        cluster.wait_healthy(timeout=0.05)
    except Exception:
        return False
    return True


async def test_with_every_node_of_the_cluster_gone_requests_still_answer_without_5xx(
    search_catalog: SearchCatalog, cluster_urls: StackUrls, cluster: RedisClusterServers
) -> None:
    """Last: it kills the whole cluster. The cluster client's own failure (no node reachable) is
    no RedisError; before it was caught as one, a request here answered 500."""
    settings = proxy_settings(
        search_catalog, cluster_urls, rate_limit_enabled=True, rate_limit_max=1000, trusted_proxies=LOOPBACK
    )
    async with TestClient(TestServer(create_app(settings))) as client:
        await following(client)
        assert (await client.get("/api/search?q=wand")).status == 200
        for node in cluster.nodes:
            node.process.kill()
            node.process.wait(10)
        statuses = []
        for round_ in range(3):
            for page in range(1, 7):  # new keys: each asks Redis (the cache's L2, the limiter)
                response = await client.get(f"/api/search?q=wand&page={page}&size={10 + round_}")
                await response.read()
                statuses.append(response.status)
            # Past the breakers' cooldown and the client's minimum refresh interval (1 s each):
            # the next calls probe Redis, and the client looks for the cluster again — and finds
            # no node at all.
            await asyncio.sleep(1.1)
        assert set(statuses) == {200}, statuses
