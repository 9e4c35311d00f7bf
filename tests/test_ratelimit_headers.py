"""The rate-limit headers (proxy.ratelimit.headers) from real bucket decisions."""

from __future__ import annotations

from proxy.ratelimit.bucket import take
from proxy.ratelimit.headers import rate_limit_headers


def test_a_fresh_client_sees_its_policy_and_what_remains() -> None:
    decision = take(None, now_ms=0, cost=1, capacity=100, period_ms=60_000)
    headers = rate_limit_headers("default", 100, 60_000, decision)
    assert headers["RateLimit-Policy"] == '"default";q=100;w=60'
    # 99 left; one token back takes 600 ms, announced as a whole second rounded up.
    assert headers["RateLimit"] == '"default";r=99;t=1'
    assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"], headers["X-RateLimit-Reset"]) == (
        "100",
        "99",
        "1",
    )


def test_an_empty_bucket_says_zero_remaining_and_the_time_to_fill() -> None:
    bucket = None
    for _ in range(20):
        decision = take(bucket, now_ms=1_000, cost=1, capacity=20, period_ms=10_000)
        bucket = decision.bucket
    refused = take(bucket, now_ms=1_000, cost=1, capacity=20, period_ms=10_000)
    assert not refused.allowed
    headers = rate_limit_headers("key", 20, 10_000, refused)
    assert headers["RateLimit"] == '"key";r=0;t=10'  # empty: a whole period to be full again
    assert headers["X-RateLimit-Remaining"] == "0"


def test_a_sub_second_period_still_has_a_window_of_one_second() -> None:
    decision = take(None, now_ms=0, cost=1, capacity=5, period_ms=200)
    assert rate_limit_headers("default", 5, 200, decision)["RateLimit-Policy"] == '"default";q=5;w=1'
