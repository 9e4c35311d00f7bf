"""Batched rate-limit decisions (``proxy.ratelimit.batch``) against a real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import redis.asyncio as aioredis

from devstack.servers import start_redis
from proxy.ratelimit.batch import MAX_BATCH, Batcher
from proxy.ratelimit.bucket import Decision
from proxy.ratelimit.script import RedisBuckets


class RoundTrips:
    def __init__(self) -> None:
        self.seen: list[bool] = []  # failed, per round trip

    def __call__(self, seconds: float, failed: bool) -> None:
        assert seconds >= 0
        self.seen.append(failed)


async def _outcomes(waiters: list[asyncio.Future[Decision]]) -> list[bool | BaseException]:
    results = await asyncio.gather(*waiters, return_exceptions=True)
    return [r if isinstance(r, BaseException) else r.allowed for r in results]


async def test_decisions_asked_for_together_share_one_round_trip_and_stay_exact(
    redis: aioredis.Redis, redis_prefix: str
) -> None:
    trips = RoundTrips()
    batcher = Batcher(RedisBuckets(redis, redis_prefix), 5.0, trips)
    one, other = uuid.uuid4().hex, uuid.uuid4().hex
    waiters = [batcher.take(one, 1, 20, 3_600_000) for _ in range(50)]
    waiters += [batcher.take(other, 1, 10, 3_600_000) for _ in range(15)]
    outcomes = await _outcomes(waiters)
    assert outcomes == [True] * 20 + [False] * 30 + [True] * 10 + [False] * 5
    assert trips.seen == [False]


async def test_decisions_asked_while_a_round_trip_is_out_leave_together_after_it(
    redis: aioredis.Redis, redis_prefix: str
) -> None:
    trips = RoundTrips()
    batcher = Batcher(RedisBuckets(redis, redis_prefix), 5.0, trips)
    first = batcher.take("first", 1, 100, 60_000)
    await asyncio.sleep(0)  # the first round trip leaves
    later = [batcher.take(f"later-{i}", 1, 100, 60_000) for i in range(30)]
    await asyncio.sleep(0)
    assert not first.done()  # still out: the later ones must wait for it, not leave one by one
    assert await _outcomes([first, *later]) == [True] * 31
    assert trips.seen == [False, False]


async def test_a_batch_never_exceeds_its_size(redis: aioredis.Redis, redis_prefix: str) -> None:
    trips = RoundTrips()
    batcher = Batcher(RedisBuckets(redis, redis_prefix), 5.0, trips)
    waiters = [batcher.take(f"c{i}", 1, 10, 60_000) for i in range(MAX_BATCH * 2 + 1)]
    assert all(await _outcomes(waiters))
    assert trips.seen == [False, False, False]


async def test_no_decision_waits_past_its_deadline_while_redis_is_stopped(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis")
    client = aioredis.from_url(server.url)
    try:
        trips = RoundTrips()
        batcher = Batcher(RedisBuckets(client, "t:"), 0.05, trips)
        assert await _outcomes([batcher.take("warm", 1, 10, 1000)]) == [True]
        server.pause()
        started = time.monotonic()
        first = [batcher.take("a", 1, 10, 1000) for _ in range(5)]
        await asyncio.sleep(0.03)
        second = [batcher.take("b", 1, 10, 1000) for _ in range(5)]  # while the first is out
        outcomes = await _outcomes(first + second)
        elapsed = time.monotonic() - started
        assert all(isinstance(o, TimeoutError) for o in outcomes), outcomes
        # Each waited its own 50 ms (not the first one's and then 50 more): 30 + 50 ms, plus the
        # event loop's and the machine's lag.
        assert elapsed < 0.5, elapsed
        assert trips.seen[0] is False and trips.seen[1:] and all(trips.seen[1:])
        server.resume()
        assert await _outcomes([batcher.take("after", 1, 10, 1000)]) == [True]
        assert trips.seen[-1] is False
        await batcher.close()
    finally:
        await client.aclose()
        server.stop()


async def test_closing_fails_the_decisions_still_waiting(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis")
    client = aioredis.from_url(server.url)
    try:
        batcher = Batcher(RedisBuckets(client, "t:"), 10.0)
        server.pause()
        out = batcher.take("a", 1, 10, 1000)
        await asyncio.sleep(0)
        waiting = batcher.take("b", 1, 10, 1000)
        started = time.monotonic()
        async with asyncio.timeout(5):
            await batcher.close()
            outcomes = await _outcomes([out, waiting])
        assert all(isinstance(o, ConnectionError) for o in outcomes), outcomes
        assert time.monotonic() - started < 5  # not the 10 s timeout
    finally:
        server.resume()
        await client.aclose()
        server.stop()
