"""The supervisor's restart delays (``proxy.restarts``): a model of a worker's life, clock given."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.restarts import CAP_S, FIRST_S, STABLE_S, RestartBackoff


def test_a_worker_that_keeps_dying_young_waits_twice_as_long_each_time_up_to_the_cap() -> None:
    backoff, now, delays = RestartBackoff(), 0.0, []
    backoff.started(now)
    for _ in range(8):
        now += 0.5  # dies half a second after it starts
        delays.append(backoff.exited(now))
        now += delays[-1]
        backoff.started(now)
    assert delays == [FIRST_S, 2.0, 4.0, 8.0, 16.0, CAP_S, CAP_S, CAP_S]


def test_a_worker_that_lived_long_enough_is_restarted_after_the_first_delay_again() -> None:
    backoff = RestartBackoff()
    backoff.started(0.0)
    assert [backoff.exited(t) for t in (1.0, 2.0, 3.0)] == [FIRST_S, 2.0, 4.0]
    backoff.started(10.0)
    assert backoff.exited(10.0 + STABLE_S) == FIRST_S  # it lived STABLE_S: a fresh start


@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 100)), min_size=1, max_size=200))
def test_every_delay_is_between_the_first_and_the_cap_and_never_shrinks_while_lives_stay_short(
    lives: list[tuple[float, float]],
) -> None:
    """Any sequence of (time alive, time until the next start); many exits in a row never overflow."""
    backoff, now, last = RestartBackoff(), 0.0, 0.0
    for alive, pause in lives:
        backoff.started(now)
        now += alive
        delay = backoff.exited(now)
        assert FIRST_S <= delay <= CAP_S
        if alive < STABLE_S:
            assert delay >= last
        last = delay
        now += pause


def test_a_worker_killed_by_a_signal_is_restarted_after_the_first_delay_and_does_not_count() -> None:
    """SIGKILLed serving workers (the OOM killer, an operator, tests/test_prometheus_scrape.py ten
    times in a row) say nothing about starting: each is back after FIRST_S."""
    backoff = RestartBackoff()
    backoff.started(0.0)
    assert [backoff.exited(float(t), by_signal=True) for t in range(1, 11)] == [FIRST_S] * 10
    assert [backoff.exited(t) for t in (11.0, 12.0)] == [FIRST_S, 2.0]  # the kills did not count
    assert backoff.exited(13.0, by_signal=True) == FIRST_S
    assert backoff.exited(14.0) == 4.0  # nor do they reset a start that keeps failing
