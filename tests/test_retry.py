"""The one retry policy (catalog.retry): doubling from ``first``, capped, jittered into [½, 1]."""

from __future__ import annotations

import pytest

from catalog.retry import AT_START, Backoff


@pytest.mark.parametrize(("attempt", "nominal"), [(1, 0.2), (2, 0.4), (3, 0.8), (5, 3.2), (6, 5.0), (40, 5.0)])
def test_delays_double_up_to_the_cap_with_jitter(attempt: int, nominal: float) -> None:
    delays = [AT_START.delay(attempt) for _ in range(200)]
    assert all(nominal / 2 <= delay <= nominal for delay in delays)
    assert max(delays) - min(delays) > nominal / 10  # jittered, not a constant


def test_an_attempt_below_one_waits_like_the_first() -> None:
    policy = Backoff(first=1.0, cap=8.0)
    assert all(0.5 <= policy.delay(attempt) <= 1.0 for attempt in (0, -3))
