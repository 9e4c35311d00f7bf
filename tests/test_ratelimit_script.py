"""The token bucket's Lua script (``proxy.ratelimit.script``) against a real Redis.

The script must be ``proxy.ratelimit.bucket.take`` run inside Redis: the same decisions and the
same tokens to the last bit, whatever the sequence of requests.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.crc import key_slot

from catalog.redis_client import REDIS_ERRORS
from devstack.servers import start_redis
from proxy.ratelimit.bucket import Bucket, key_ttl_ms, take
from proxy.ratelimit.script import (
    DEFAULT_KEY_GROUPS,
    MAX_TERMS,
    SHA,
    RedisBuckets,
    Take,
    bucket_key,
    group_of,
    group_tags,
)

T0 = 1_700_000_000_000  # ms


@pytest.fixture
def buckets(redis: aioredis.Redis, redis_prefix: str) -> RedisBuckets:
    return RedisBuckets(redis, redis_prefix)


async def stored(redis: aioredis.Redis, key: str) -> Bucket:
    """The bucket as the script left it in Redis."""
    tokens, ts = await redis.hmget(key, ["tokens", "ts"])
    assert tokens is not None and ts is not None, f"no bucket at {key}"
    return Bucket(float(tokens), int(ts))


# Steps may go back in time (a clock edge case both sides must handle alike); costs include 0,
# fractions and more than any capacity drawn.
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    capacity=st.one_of(st.integers(min_value=1, max_value=100), st.floats(min_value=0.1, max_value=1000)),
    period_ms=st.integers(min_value=1, max_value=3_600_000),
    steps=st.lists(
        st.tuples(
            st.integers(min_value=-2000, max_value=20_000),
            st.one_of(st.sampled_from([0, 1, 2, 5]), st.floats(min_value=0, max_value=1500)),
            st.one_of(st.sampled_from([0, 0, 1, 5]), st.floats(min_value=0, max_value=500)),  # leases
        ),
        min_size=1,
        max_size=25,
    ),
)
async def test_the_script_and_take_agree_step_by_step(
    redis: aioredis.Redis,
    buckets: RedisBuckets,
    redis_prefix: str,
    capacity: float,
    period_ms: int,
    steps: list[tuple[int, float, float]],
) -> None:
    client = uuid.uuid4().hex  # a fresh bucket for each example
    key = bucket_key(redis_prefix, client)
    now, expected = T0, None
    for step, cost, lease in steps:
        now += step
        mine = take(expected, now, cost, capacity, period_ms, lease)
        theirs = await buckets.take(client, cost, capacity, period_ms, now_ms=now, lease=lease)
        assert theirs == mine  # allowed, remaining, retry_after, reset, and the exact tokens
        assert await stored(redis, key) == mine.bucket
        expected = mine.bucket


async def test_the_key_expires_when_the_bucket_would_be_full_again(
    redis: aioredis.Redis, buckets: RedisBuckets, redis_prefix: str
) -> None:
    spent = await buckets.take("spent", 1, 2, 200)
    assert spent.reset_ms == 100
    ttl = await redis.pttl(bucket_key(redis_prefix, "spent"))
    assert key_ttl_ms(spent, 200) - 50 <= ttl <= key_ttl_ms(spent, 200)

    full = await buckets.take("full", 0, 2, 200)
    key = bucket_key(redis_prefix, "full")
    assert await redis.exists(key)
    await asyncio.sleep((key_ttl_ms(full, 200) + 100) / 1000)
    assert not await redis.exists(key)


async def test_without_now_the_script_uses_the_server_clock(buckets: RedisBuckets) -> None:
    # 1000 tokens per 1000 ms: one token per millisecond.
    emptied = await buckets.take("clock", 1000, 1000, 1000)
    assert emptied.allowed and emptied.bucket.tokens == 0
    assert abs(emptied.bucket.updated_ms - time.time() * 1000) < 5000  # wall-clock milliseconds
    await asyncio.sleep(0.1)
    later = await buckets.take("clock", 0, 1000, 1000)
    elapsed = later.bucket.updated_ms - emptied.bucket.updated_ms
    assert 100 <= elapsed < 1000
    assert later.bucket.tokens == elapsed


async def test_a_flushed_script_cache_is_refilled_and_the_request_decided_once(
    redis: aioredis.Redis, buckets: RedisBuckets, redis_prefix: str
) -> None:
    first = await buckets.take("flushed", 1, 5, 1000, now_ms=T0)
    await redis.script_flush()
    assert await redis.script_exists(SHA) == [False]
    second = await buckets.take("flushed", 1, 5, 1000, now_ms=T0)
    assert second == take(first.bucket, T0, 1, 5, 1000)
    assert await stored(redis, bucket_key(redis_prefix, "flushed")) == Bucket(3.0, T0)
    assert await redis.script_exists(SHA) == [True]


async def test_a_clients_key_is_hash_tagged_by_its_key_group(
    redis: aioredis.Redis, buckets: RedisBuckets, redis_prefix: str
) -> None:
    key = bucket_key(redis_prefix, "client-7")
    tag = group_tags()[group_of("client-7")]
    assert key == f"{redis_prefix}ratelimit:{{{tag}}}:client-7"
    assert key_slot(key.encode()) == key_slot(tag.encode())
    await buckets.take("client-7", 1, 5, 1000)
    assert await redis.exists(key)


@pytest.mark.parametrize("groups", [1, 3, 8, 16, 256])
def test_the_groups_slots_are_spread_evenly_over_the_cluster_s_slots(groups: int) -> None:
    slots = [key_slot(tag.encode()) for tag in group_tags(groups)]
    assert slots == [slot for k, slot in enumerate(slots) if k * 16_384 // groups <= slot < (k + 1) * 16_384 // groups]
    assert len(set(slots)) == groups


def test_a_clients_key_group_is_the_same_in_every_process() -> None:
    """Every proxy must put a client in the same group: ``hash()`` of a str would not (it is
    salted per process), crc32 does. Two processes of different hash seeds, and a pinned value."""
    ids = [f"ip:10.0.0.{n}" for n in range(50)] + ["key:partner-acme", "ip:2001:db8::/64"]
    program = f"from proxy.ratelimit.script import bucket_key; print([bucket_key('p:', i) for i in {ids!r}])"
    seen = [
        subprocess.run(
            [sys.executable, "-c", program],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    ]
    assert seen[0] == seen[1] == f"{[bucket_key('p:', i) for i in ids]!r}\n"
    assert DEFAULT_KEY_GROUPS == 8 and bucket_key("p:", "ip:10.0.0.1") == "p:ratelimit:{g7.2}:ip:10.0.0.1"


async def test_arguments_are_checked_before_redis_is_asked(
    redis: aioredis.Redis, buckets: RedisBuckets, redis_prefix: str
) -> None:
    with pytest.raises(ValueError):
        await buckets.take("bad", -1, 5, 1000)
    with pytest.raises(ValueError):
        await buckets.take("bad", 1, 5, 1000, lease=-1)
    # Each decision names its terms by a byte: a call has at most MAX_TERMS distinct ones.
    with pytest.raises(ValueError):
        await buckets.take_many([Take("bad", n / 1000, 5, 1000) for n in range(MAX_TERMS + 1)])
    assert not await redis.exists(bucket_key(redis_prefix, "bad"))
    many = await buckets.take_many([Take(f"many-{n}", n / 1000, 5, 1000) for n in range(MAX_TERMS)], now_ms=T0)
    assert [decision.bucket.tokens for decision in many] == [5 - n / 1000 for n in range(MAX_TERMS)]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    takes=st.lists(
        st.tuples(st.sampled_from("abc"), st.sampled_from([0, 0.5, 1, 2, 7]), st.sampled_from([0, 0.5, 1])),
        min_size=1,
        max_size=40,
    ),
    capacity=st.sampled_from([1, 3, 10]),
)
async def test_a_batch_decides_as_its_takes_would_one_after_another(
    buckets: RedisBuckets, takes: list[tuple[str, float, float]], capacity: int
) -> None:
    """One script call for many decisions (several of one client among them, some with leases) is
    the same as ``take`` applied to each in order, at the batch's one time."""
    run = uuid.uuid4().hex  # fresh buckets for each example
    batch = [Take(f"{run}-{who}", cost, capacity, 1000, lease) for who, cost, lease in takes]
    decided = await buckets.take_many(batch, now_ms=T0)
    bucket: dict[str, Bucket | None] = {}
    expected = []
    for who, cost, lease in takes:
        mine = take(bucket.get(who), T0, cost, capacity, 1000, lease)
        bucket[who] = mine.bucket
        expected.append(mine)
    assert decided == expected


# --- the connection the script calls go over (one Redis) -------------------------------------


async def _script_connections(admin: aioredis.Redis) -> list[str]:
    """The ids of the connections whose last command was the bucket script."""
    return [c["id"] for c in await admin.client_list() if c["cmd"] == "evalsha"]


async def test_a_killed_script_connection_fails_one_call_at_most_and_is_replaced(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis")
    client, admin = aioredis.from_url(server.url), aioredis.from_url(server.url)
    try:
        buckets = RedisBuckets(client, "t:")
        for _ in range(3):
            await buckets.take("k", 1, 10, 60_000, now_ms=T0)
        (kept,) = await _script_connections(admin)  # three calls, one connection
        await admin.client_kill_filter(_id=kept)
        try:
            after = await buckets.take("k", 1, 10, 60_000, now_ms=T0)
        except REDIS_ERRORS:
            after = await buckets.take("k", 1, 10, 60_000, now_ms=T0)
        assert after.remaining == 6  # a failed call took nothing: 10 - 3 - 1
        assert await _script_connections(admin) not in ([], [kept])
    finally:
        await client.aclose()
        await admin.aclose()
        server.stop()


async def test_a_call_cancelled_on_the_kept_connection_leaves_no_reply_for_the_next(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis")
    client = aioredis.from_url(server.url)
    try:
        buckets = RedisBuckets(client, "t:")
        await buckets.take("warm", 1, 10, 60_000, now_ms=T0)
        server.pause()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await buckets.take("late", 3, 10, 60_000, now_ms=T0)
        server.resume()
        # The late call's reply, if Redis made one, must not be read as this call's.
        decision = await buckets.take("next", 1, 100, 60_000, now_ms=T0)
        assert decision.remaining == 99
    finally:
        server.resume()
        await client.aclose()
        server.stop()


async def test_calls_made_while_one_is_out_take_another_connection_and_stay_exact(
    redis: aioredis.Redis, buckets: RedisBuckets
) -> None:
    await buckets.take("warm", 0, 100, 60_000, now_ms=T0)  # the kept connection, taken
    # Six: the fixture's client has eight connections, one of them kept by ``buckets``. Each
    # client its own cost, so an answer read by the wrong call shows.
    decided = await asyncio.gather(*(buckets.take(f"together-{n}", n, 100, 60_000, now_ms=T0) for n in range(6)))
    assert [d.remaining for d in decided] == [100 - n for n in range(6)]
