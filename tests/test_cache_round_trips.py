"""How many Redis round trips a cache miss costs, against a real Redis (issue 24).

A miss used to make two sequential round trips before the engine (the L2 read, then the
lock-and-read) and a third, awaited, after it (the L2 write). Now: one before the engine — the
read takes the fill lock in the same script — and the write runs after the answer. The tier's
methods are counted by wrapping them on the instance; every call still reaches the real Redis.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio.cluster import RedisCluster

from catalog.cache_generation import Announcement, generation_key
from catalog.redis_client import RedisClient
from devstack.stack import StackUrls
from proxy.app import create_app
from proxy.cache.entry import Entry
from proxy.cache.freshness import CatalogView, Policy
from proxy.cache.keys import digest, lock_key, storage_key
from proxy.cache.l1 import LRU
from proxy.cache.l2 import RedisTier
from proxy.cache.notices import FillNotices
from proxy.cache.response_cache import Produced, ResponseCache
from proxy.metrics import ProxyMetrics
from proxy.state import CACHE, ENGINE
from tests.conftest import SearchCatalog, proxy_settings
from tests.indexer_support import eventually
from tests.proxy_support import following

ROUTE = "search"
KEY = "search:v2?q=wand"
TIER_CALLS = ("read_or_lock", "lock", "get", "fill", "release")


class CountedTier:
    """The real tier with each Redis-bound method counted (and ``fill`` optionally held back)."""

    def __init__(self, tier: RedisTier) -> None:
        self.tier = tier
        self.calls: list[str] = []
        self.fill_may_start = asyncio.Event()
        self.fill_may_start.set()
        for name in TIER_CALLS:
            setattr(tier, name, self._counted(name, getattr(tier, name)))

    def _counted(self, name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if name == "fill":
                await self.fill_may_start.wait()
            return await method(*args, **kwargs)

        return counted


def _worker(
    client: aioredis.Redis, prefix: str, clock: Callable[[], float] = time.time, metrics: ProxyMetrics | None = None
) -> tuple[ResponseCache, CountedTier]:
    """One worker's cache over the shared Redis, following catalog generation 1."""
    policy = Policy(ttl=60.0, revalidate_after=15.0)
    tier = RedisTier(client, prefix, timeout=1.0, keep_for=360.0, lock_for=5.0)
    view = CatalogView(policy)
    view.follow(1, clock())
    cache = ResponseCache(
        policy, LRU(100, 1 << 20), tier, view, FillNotices(), metrics or ProxyMetrics(), lock_wait=1.0, clock=clock
    )
    return cache, CountedTier(tier)


async def test_a_cold_miss_makes_one_redis_round_trip_before_the_engine_and_writes_after_the_answer(
    redis: aioredis.Redis,
) -> None:
    prefix = f"rt{uuid.uuid4().hex[:8]}:"
    cache, counted = _worker(redis, prefix)
    key_digest = digest(KEY)
    seen_at_engine: list[tuple[list[str], bool]] = []

    async def engine() -> Produced:
        locked = bool(await redis.exists(lock_key(prefix, key_digest)))
        seen_at_engine.append((list(counted.calls), locked))
        return Produced(b'{"total": 1}', frozenset({"p:1"}))

    counted.fill_may_start.clear()  # the L2 write cannot start: the answer must not wait for it
    served = await asyncio.wait_for(cache.answer(ROUTE, KEY, engine), 5)
    assert served.body == b'{"total": 1}' and served.cache == "MISS"
    assert seen_at_engine == [(["read_or_lock"], True)]  # one round trip, and it took the lock
    assert counted.calls == ["read_or_lock"] and served.due == key_digest  # the write waits for the answer
    cache.answer_sent(served)  # as the route's response does once aiohttp has written it
    assert not await redis.exists(storage_key(prefix, key_digest))

    counted.fill_may_start.set()

    async def written() -> bool:
        stored = await redis.exists(storage_key(prefix, key_digest))
        return bool(stored) and not await redis.exists(lock_key(prefix, key_digest))

    await eventually(written, timeout=5, what="the L2 write after the answer")
    await cache.close()
    assert counted.calls == ["read_or_lock", "fill"]


async def test_an_l2_hit_in_another_worker_is_one_round_trip_and_leaves_no_lock(redis: aioredis.Redis) -> None:
    prefix = f"rt{uuid.uuid4().hex[:8]}:"
    first, _ = _worker(redis, prefix)
    second, counted = _worker(redis, prefix)

    async def engine() -> Produced:
        return Produced(b'{"total": 2}', frozenset({"p:2"}))

    async def never() -> Produced:
        raise AssertionError("an L2 hit must not ask the engine")

    await first.answer(ROUTE, KEY, engine)
    await first.close()  # its L2 write done
    served = await second.answer(ROUTE, KEY, never)
    assert served.body == b'{"total": 2}' and served.cache == "HIT"
    assert counted.calls == ["read_or_lock"]
    assert not await redis.exists(lock_key(prefix, digest(KEY)))
    # And the next one is an L1 hit: no round trip at all.
    assert (await second.answer(ROUTE, KEY, never)).cache == "HIT"
    assert counted.calls == ["read_or_lock"]


async def test_an_expired_entry_is_refilled_under_the_lock_its_read_took(redis: aioredis.Redis) -> None:
    prefix = f"rt{uuid.uuid4().hex[:8]}:"
    old, _ = _worker(redis, prefix)
    answers = iter((b'{"v": "old"}', b'{"v": "new"}'))

    async def engine() -> Produced:
        return Produced(next(answers), frozenset())

    await old.answer(ROUTE, KEY, engine)
    await old.close()
    # A worker whose clock is two minutes on: the stored entry is past its lifetime there.
    later, counted = _worker(redis, prefix, clock=lambda: time.time() + 120)
    calls_at_engine: list[list[str]] = []

    async def engine_later() -> Produced:
        calls_at_engine.append(list(counted.calls))
        return await engine()

    served = await later.answer(ROUTE, KEY, engine_later)
    assert served.body == b'{"v": "new"}'
    assert calls_at_engine == [["read_or_lock"]]
    await later.close()


async def test_a_miss_never_serves_a_fill_begun_before_a_change_it_shows_was_announced(
    redis: aioredis.Redis,
) -> None:
    """Issue 24: a request that joined a fill under way, begun before a change to a product it
    shows was announced, served what that fill had read — the old price — as a MISS, past
    ``max_stale`` after the announcement. It is filled once more instead."""
    now = [time.time()]
    metrics = ProxyMetrics()
    cache, _ = _worker(redis, f"rt{uuid.uuid4().hex[:8]}:", clock=lambda: now[0], metrics=metrics)
    old_price_read, answer_old_price = asyncio.Event(), asyncio.Event()
    asked: list[bytes] = []

    async def engine() -> Produced:
        body = b'{"price": 1}' if not asked else b'{"price": 2}'
        asked.append(body)
        if len(asked) == 1:  # the engine read the old price; its answer is on its way
            old_price_read.set()
            await answer_old_price.wait()
        return Produced(body, frozenset({"p:1"}))

    first = asyncio.ensure_future(cache.answer(ROUTE, KEY, engine))
    await asyncio.wait_for(old_price_read.wait(), 5)
    cache.view.announce(Announcement(2, frozenset({"p:1"})), now[0])  # the price changed
    now[0] += cache.policy.max_stale + 0.5
    second = asyncio.ensure_future(cache.answer(ROUTE, KEY, engine))

    async def joined() -> bool:
        return metric(metrics, "search_proxy_cache_coalesced_total", scope="worker") >= 1

    await eventually(joined, timeout=5, what="the second request joining the fill under way")
    answer_old_price.set()
    served = await asyncio.wait_for(second, 5)
    assert served.body == b'{"price": 2}' and served.cache == "MISS"
    assert (await asyncio.wait_for(first, 5)).body == b'{"price": 2}'
    assert asked == [b'{"price": 1}', b'{"price": 2}']  # one more engine request, shared by both
    await cache.close()


def metric(metrics: ProxyMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {"route": ROUTE, **labels}) or 0.0


async def test_a_hit_near_its_ttl_is_served_while_one_refresh_replaces_it_and_never_expires(
    redis: aioredis.Redis,
) -> None:
    """Issue 24: with nothing in the catalog changing, every entry was a HIT until its ttl, then a
    MISS that made its requests wait on the engine; entries filled together during a ramp-up
    came due together and the stress run's throughput fell by two thirds. Within
    ``refresh_ahead`` of its ttl an entry is still served at once, as a HIT, while one background
    refresh (one engine request across workers, under the fill lock) replaces it."""
    start = time.time()
    now = [start]
    prefix = f"rt{uuid.uuid4().hex[:8]}:"
    one, _ = _worker(redis, prefix, clock=lambda: now[0])
    other, _ = _worker(redis, prefix, clock=lambda: now[0])
    refresh_may_answer = asyncio.Event()
    asked: list[bytes] = []

    async def engine() -> Produced:
        body = b'{"v": %d}' % len(asked)
        asked.append(body)
        if len(asked) > 1:  # the refresh: held back while the requests below are answered
            await refresh_may_answer.wait()
        return Produced(body, frozenset({"p:1"}))

    assert (await one.answer(ROUTE, KEY, engine)).cache == "MISS"
    await one.close()  # its L2 write done
    assert (await other.answer(ROUTE, KEY, engine)).cache == "HIT"  # from L2, now in both L1s
    # The default policy (ttl 60 s less up to 10 % jitter, refresh-ahead 10 s): past the entry's
    # refresh point (at most 50 s), short of its ttl (at least 54 s).
    now[0] = start + 52
    served = await asyncio.wait_for(
        asyncio.gather(*(worker.answer(ROUTE, KEY, engine) for worker in (one, other) for _ in range(20))), 5
    )
    assert {(s.body, s.cache) for s in served} == {(b'{"v": 0}', "HIT")}  # none waited on the refresh

    async def refreshing() -> bool:
        return len(asked) == 2

    await eventually(refreshing, timeout=5, what="one background refresh asking the engine")
    refresh_may_answer.set()

    async def replaced() -> bool:
        kept = [worker.l1.get(KEY) for worker in (one, other)]
        return all(entry is not None and entry.body == b'{"v": 1}' for entry in kept)

    await eventually(replaced, timeout=5, what="both workers keeping the refreshed entry")
    now[0] = start + 61  # past the first entry's ttl: the refreshed one is served

    async def never() -> Produced:
        raise AssertionError("a refreshed entry must not ask the engine")

    for worker in (one, other):
        assert (await worker.answer(ROUTE, KEY, never)).body == b'{"v": 1}'
    assert asked == [b'{"v": 0}', b'{"v": 1}']  # the refresh: one engine request for both workers
    await one.close()
    await other.close()


async def test_closing_ends_a_refresh_still_under_way_before_the_clients_close(redis: aioredis.Redis) -> None:
    """At shutdown the app closes the engine client and Redis right after the cache: a refresh
    still running then died on a closed client (an unhandled exception of ``asyncio.run``). The
    cache's close waits for it a bounded time, then cancels it and sees it end."""
    start = time.time()
    now = [start]
    cache, _ = _worker(redis, f"rt{uuid.uuid4().hex[:8]}:", clock=lambda: now[0])
    held = asyncio.Event()

    async def engine() -> Produced:
        if cache.l1.get(KEY) is not None:  # the refresh: answers only when told, never here
            await held.wait()
        return Produced(b'{"v": 0}', frozenset({"p:1"}))

    assert (await cache.answer(ROUTE, KEY, engine)).cache == "MISS"
    now[0] = start + 52  # past the refresh point, short of the ttl
    assert (await cache.answer(ROUTE, KEY, engine)).cache == "HIT"
    refreshes = [task for task in asyncio.all_tasks() if "_fill" in repr(task.get_coro())]
    assert len(refreshes) == 1 and not refreshes[0].done()
    await asyncio.wait_for(cache.close(timeout=0.2), 5)
    assert refreshes[0].cancelled()


# --- through a whole proxy: the commands a real Redis runs (MONITOR) ---------------------------


class RedisMonitor:
    """Every command the stack's Redis servers run, in their order, as MONITOR reports them: the
    commands of one server between two markers (an ``ECHO`` this monitor sends) ran between the
    moments the markers were sent. On a Redis Cluster, every primary is watched and marked."""

    def __init__(self, redis: RedisClient) -> None:
        if isinstance(redis, RedisCluster):
            self._nodes = [(node.host, node.port) for node in redis.get_primaries()]
        else:
            kwargs = redis.connection_pool.connection_kwargs
            self._nodes = [(kwargs.get("host", "localhost"), kwargs.get("port", 6379))]
        self.seen: list[list[str]] = [[] for _ in self._nodes]
        self._clients: list[aioredis.Redis] = []
        self._markers: list[aioredis.Redis] = []  # connected before MONITOR starts: no handshakes seen
        self._readers: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> RedisMonitor:
        for n, (host, port) in enumerate(self._nodes):
            marker = aioredis.Redis(host=host, port=int(port), single_connection_client=True)
            await marker.ping()
            self._markers.append(marker)
            client = aioredis.Redis(host=host, port=int(port))
            self._clients.append(client)
            monitor = client.monitor()
            await monitor.__aenter__()
            self._readers.append(asyncio.ensure_future(self._read(monitor, self.seen[n])))
        await self.mark("monitor-started")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)
        for client in self._clients + self._markers:
            await client.aclose()

    @staticmethod
    async def _read(monitor: Any, seen: list[str]) -> None:
        while True:
            command = await monitor.next_command()
            if command["client_type"] != "lua":  # a script's own commands: part of its one call
                seen.append(command["command"])

    async def mark(self, name: str) -> None:
        """Send marker ``name`` to every server; return once each has reported it."""
        for marker in self._markers:
            await marker.echo(name)

        async def reported() -> bool:
            return all(f"ECHO {name}" in seen for seen in self.seen)

        await eventually(reported, timeout=10, what=f"MONITOR reporting marker {name}")

    def between(self, first: str, second: str, ignore: tuple[str, ...] = ()) -> list[str]:
        """The commands run between marker ``first`` and the next ``second`` on every server (but
        the markers, and those starting with any of ``ignore``)."""
        out = []
        for seen in self.seen:
            start = seen.index(f"ECHO {first}")
            end = seen.index(f"ECHO {second}", start)
            out += [c for c in seen[start + 1 : end] if not c.startswith(("ECHO ", *ignore))]
        return out


def _recording_access_log(events: list[str]) -> type[AbstractAccessLogger]:
    class Recorded(AbstractAccessLogger):
        """aiohttp logs an access once the response is written: that moment, recorded."""

        def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
            events.append(f"answer sent {request.path_qs}")

    return Recorded


async def test_a_miss_through_the_proxy_runs_one_redis_command_before_the_engine_and_its_write_after_the_answer(
    search_catalog: SearchCatalog, stack_urls: StackUrls, redis: RedisClient
) -> None:
    """Issue 24, counted on the real Redis: with the limiter on (the client holding a lease) a
    cache miss runs one command before the engine call — the script that reads L2 and takes the
    fill lock — and its L2 write starts after aiohttp has written the answer (it used to start as
    the engine answered, its encoding and send ahead of the answer's)."""
    settings = proxy_settings(
        search_catalog, stack_urls, rate_limit_enabled=True, rate_limit_max=1_000_000_000, rate_limit_ttl_ms=1000
    )
    events: list[str] = []
    server = TestServer(create_app(settings))
    await server.start_server(access_log_class=_recording_access_log(events))  # TestClient's start keeps it
    async with TestClient(server) as client, RedisMonitor(redis) as monitor:
        await following(client)
        app = server.app
        tier = app[CACHE].l2
        assert tier is not None
        fill, search = tier.fill, app[ENGINE].search

        async def recorded_fill(key_digest: str, entry: Entry, *, locked: bool) -> None:
            events.append("l2 write")
            await fill(key_digest, entry, locked=locked)

        async def marked_search(body: dict[str, Any]) -> dict[str, Any]:
            await monitor.mark("engine-called")  # every command the proxy ran so far is before it
            return await search(body)

        tier.fill = recorded_fill  # type: ignore[method-assign]
        app[ENGINE].search = marked_search  # type: ignore[method-assign]

        async def written(count: int) -> bool:
            return events.count("l2 write") == count

        # The client's first miss brings its lease, and the worker's loads the script (a NOSCRIPT
        # answer, SCRIPT LOAD, EVALSHA again: once per worker and Redis).
        assert (await client.get("/api/search", params={"q": "wand"})).headers["X-Cache"] == "MISS"
        await eventually(partial(written, 1), timeout=10, what="the first miss's L2 write")
        await monitor.mark("before-the-miss")
        response = await client.get("/api/search", params={"q": "wand", "sort": "newest"})
        assert response.status == 200 and response.headers["X-Cache"] == "MISS"
        await response.read()
        ignored = ("PING", f"GET {generation_key(settings.redis_key_prefix)}")  # health checks, the watchdog
        # Only this proxy's keys: a test before this one may leave work on the shared Redis (a GET
        # of another prefix showed here in a run of several test files, never alone).
        run = [
            c for c in monitor.between("before-the-miss", "engine-called", ignored) if settings.redis_key_prefix in c
        ]
        assert [c.split(" ")[0] for c in run] == ["EVALSHA"], run
        await eventually(partial(written, 2), timeout=10, what="the second miss's L2 write")
        assert events == [
            "answer sent /api/search?q=wand",
            "l2 write",
            "answer sent /api/search?q=wand&sort=newest",
            "l2 write",
        ]
