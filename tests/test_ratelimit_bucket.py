"""The token bucket's arithmetic (``proxy.ratelimit.bucket``), pure: no servers, no clock.

Expected values are worked out here from the parameters, not read back from the code.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.ratelimit.bucket import KEY_MARGIN_MS, Bucket, Decision, key_ttl_ms, take

T0 = 1_700_000_000_000  # ms


def run(bucket: Bucket | None, now_ms: int, cost: float = 1, capacity: float = 5, period_ms: int = 1000) -> Decision:
    return take(bucket, now_ms, cost, capacity, period_ms)


def test_a_new_client_gets_a_full_bucket() -> None:
    decision = run(None, T0, cost=0)
    assert decision == Decision(True, 5, 0, 0, Bucket(5.0, T0))


def test_a_burst_of_capacity_is_allowed_and_the_next_request_waits_for_one_token() -> None:
    bucket: Bucket | None = None
    for spent in range(1, 6):
        decision = run(bucket, T0)
        assert decision.allowed
        assert decision.remaining == 5 - spent
        bucket = decision.bucket
    assert decision.reset_ms == 1000  # empty: a whole period to be full again
    denied = run(bucket, T0)
    assert not denied.allowed
    assert denied.retry_after_ms == math.ceil(1 * 1000 / 5)  # one token at 5 tokens per 1000 ms
    assert denied.bucket == bucket
    assert not run(bucket, T0 + 199).allowed
    assert run(bucket, T0 + 200).allowed


def test_half_a_period_refills_half_the_capacity() -> None:
    empty = Bucket(0.0, T0)
    decision = take(empty, T0 + 5000, 0, 100, 10_000)
    assert decision.bucket == Bucket(50.0, T0 + 5000)
    assert decision.remaining == 50
    assert decision.reset_ms == 5000


def test_tokens_refill_in_fractions() -> None:
    capacity, period = 3, 1000
    decision = take(Bucket(0.0, T0), T0 + 100, 1, capacity, period)
    tokens = 100 * capacity / period  # 0.3
    assert not decision.allowed
    assert decision.bucket.tokens == pytest.approx(tokens)
    assert decision.remaining == 0
    wait = math.ceil((1 - tokens) * period / capacity)  # 234
    assert decision.retry_after_ms == wait
    assert decision.reset_ms == math.ceil((capacity - tokens) * period / capacity)
    assert not take(decision.bucket, T0 + 100 + wait - 1, 1, capacity, period).allowed
    after = take(decision.bucket, T0 + 100 + wait, 1, capacity, period)
    assert after.allowed
    assert after.bucket.tokens == pytest.approx(tokens + wait * capacity / period - 1)


def test_refill_stops_at_capacity() -> None:
    decision = run(Bucket(4.5, T0), T0 + 3_600_000, cost=0)
    assert decision.bucket.tokens == 5.0
    assert decision.reset_ms == 0


def test_a_clock_that_goes_backwards_neither_refills_nor_removes_tokens() -> None:
    bucket = Bucket(2.5, T0)
    decision = run(bucket, T0 - 60_000, cost=0)
    assert decision.bucket == bucket  # the later time is kept
    taken = run(bucket, T0 - 60_000, cost=1)
    assert taken.allowed and taken.bucket == Bucket(1.5, T0)
    # Time moving on again refills from the kept time, not from the earlier one.
    assert run(taken.bucket, T0 + 100, cost=0).bucket == Bucket(2.0, T0 + 100)


def test_a_cost_of_zero_is_always_allowed() -> None:
    decision = run(Bucket(0.0, T0), T0, cost=0)
    assert decision.allowed and decision.retry_after_ms == 0 and decision.remaining == 0


def test_a_cost_above_capacity_is_never_allowed_and_retries_after_a_period() -> None:
    decision = run(None, T0, cost=5.5)
    assert not decision.allowed
    assert decision.retry_after_ms == 1000
    assert decision.bucket == Bucket(5.0, T0)
    assert decision.reset_ms == 0


def test_remaining_counts_whole_tokens() -> None:
    decision = run(Bucket(3.0, T0), T0, cost=0.5)
    assert decision.remaining == 2
    assert decision.reset_ms == math.ceil((5 - 2.5) * 1000 / 5)


def test_the_key_lives_until_the_bucket_is_full_again_plus_a_margin() -> None:
    assert key_ttl_ms(run(None, T0, cost=0), 1000) == KEY_MARGIN_MS
    half = run(None, T0, cost=2.5)
    assert key_ttl_ms(half, 1000) == 500 + KEY_MARGIN_MS


def test_a_lease_comes_with_an_allowed_request_while_the_bucket_stays_half_full() -> None:
    # A new client: 100 - 1 - 5 = 94 tokens, at least half of 100.
    first = take(None, T0, 1, 100, 60_000, lease=5)
    assert first.allowed and first.leased == 5 and first.bucket == Bucket(94.0, T0) and first.remaining == 94
    assert first.reset_ms == math.ceil(6 * 60_000 / 100)
    # Exactly half after both: granted; one token less: only the request is.
    assert take(Bucket(56.0, T0), T0, 1, 100, 60_000, lease=5).bucket == Bucket(50.0, T0)
    short = take(Bucket(55.5, T0), T0, 1, 100, 60_000, lease=5)
    assert short.allowed and short.leased == 0 and short.bucket == Bucket(54.5, T0)
    # A refused request brings no lease, and takes nothing.
    refused = take(Bucket(0.5, T0), T0, 1, 100, 60_000, lease=5)
    assert not refused.allowed and refused.leased == 0 and refused.bucket == Bucket(0.5, T0)


@given(
    steps=st.lists(
        st.tuples(st.integers(min_value=0, max_value=5000), st.floats(min_value=0, max_value=12)), max_size=60
    ),
    lease=st.floats(min_value=0.1, max_value=40),
)
def test_leases_never_take_a_bucket_below_half(steps: list[tuple[int, float]], lease: float) -> None:
    now, bucket = T0, None
    for step, cost in steps:
        now += step
        decision = take(bucket, now, cost, 100, 10_000, lease)
        if decision.leased:
            assert decision.leased == lease and decision.bucket.tokens >= 50
        bucket = decision.bucket


@pytest.mark.parametrize(
    ("cost", "capacity", "period_ms"),
    [
        (-1, 5, 1000),
        (math.nan, 5, 1000),
        (math.inf, 5, 1000),
        (1, 0, 1000),
        (1, -5, 1000),
        (1, math.inf, 1000),
        (1, 5, 0),
        (1, 5, -1000),
    ],
)
def test_arguments_are_checked(cost: float, capacity: float, period_ms: int) -> None:
    with pytest.raises(ValueError):
        take(None, T0, cost, capacity, period_ms)


@pytest.mark.parametrize("lease", [-1, math.nan, math.inf])
def test_a_lease_is_checked_too(lease: float) -> None:
    with pytest.raises(ValueError):
        take(None, T0, 1, 100, 1000, lease)


# The token-bucket guarantee: between any two requests, what the allowed ones spent is at most a
# full bucket plus what refilled meanwhile. Each step moves the clock by ≥ 0 ms.
@given(
    capacity=st.floats(min_value=0.5, max_value=100),
    period_ms=st.integers(min_value=1, max_value=60_000),
    steps=st.lists(
        st.tuples(st.integers(min_value=0, max_value=5000), st.floats(min_value=0, max_value=120)),
        min_size=1,
        max_size=40,
    ),
)
def test_spending_never_exceeds_a_burst_plus_the_refill(
    capacity: float, period_ms: int, steps: list[tuple[int, float]]
) -> None:
    now, bucket = T0, None
    spent: list[tuple[int, float]] = []  # (time, cost) of each allowed request
    for step, cost in steps:
        now += step
        decision = take(bucket, now, cost, capacity, period_ms)
        bucket = decision.bucket
        assert 0 <= bucket.tokens <= capacity
        assert decision.allowed == (decision.retry_after_ms == 0)
        if decision.allowed:
            spent.append((now, cost))
    for first in range(len(spent)):
        total = 0.0
        for at, cost in spent[first:]:
            total += cost
            bound = capacity + (at - spent[first][0]) * capacity / period_ms
            assert total <= bound * (1 + 1e-9)
