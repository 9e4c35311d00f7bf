"""The circuit breaker (proxy.breaker), on a clock the test moves."""

from __future__ import annotations

import pytest

from proxy.breaker import Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_it_opens_after_failures_in_a_row_not_after_scattered_ones() -> None:
    clock = Clock()
    breaker = Breaker(failures=3, cooldown=1.0, clock=clock)
    assert breaker.failed() is False and breaker.failed() is False
    breaker.succeeded()  # the run is broken: counting starts again
    assert breaker.failed() is False and breaker.failed() is False
    assert breaker.closed
    assert breaker.failed() is True  # the third in a row opens it, and says so once
    assert not breaker.closed


def test_after_the_cooldown_one_probe_decides() -> None:
    clock = Clock()
    breaker = Breaker(failures=3, cooldown=1.0, clock=clock)
    for _ in range(3):
        breaker.failed()
    clock.now += 0.99
    assert not breaker.closed
    clock.now += 0.02
    assert breaker.closed  # half-open: the next call probes
    assert breaker.failed() is True  # a failed probe reopens at once, for a whole cooldown
    assert not breaker.closed
    clock.now += 1.01
    breaker.succeeded()  # a successful probe closes it for good
    assert breaker.failed() is False and breaker.closed


def test_failures_reported_while_open_change_nothing() -> None:
    """Calls already in flight when it opened may fail afterwards: no new cooldown, no report."""
    clock = Clock()
    breaker = Breaker(failures=1, cooldown=1.0, clock=clock)
    assert breaker.failed() is True
    clock.now += 0.5
    assert breaker.failed() is False
    clock.now += 0.6
    assert breaker.closed  # half-open on time: the late failure did not push it


@pytest.mark.parametrize(("failures", "cooldown", "probes"), [(0, 1.0, 1), (1, -0.1, 1), (1, 1.0, 0)])
def test_nonsense_parameters_are_refused(failures: int, cooldown: float, probes: int) -> None:
    with pytest.raises(ValueError):
        Breaker(failures=failures, cooldown=cooldown, probes=probes)


def test_half_open_it_permits_only_its_probes_until_one_reports() -> None:
    clock = Clock()
    breaker = Breaker(failures=2, cooldown=1.0, probes=2, clock=clock)
    assert breaker.state == "closed"
    assert all(breaker.permit() for _ in range(10))  # closed: everyone
    breaker.failed()
    breaker.failed()
    assert breaker.state == "open" and not breaker.permit()
    clock.now += 1.01
    assert breaker.state == "half_open"
    assert [breaker.permit() for _ in range(4)] == [True, True, False, False]
    breaker.abandoned()  # one probe gave up (its request was cancelled): its slot is free
    assert breaker.permit() and not breaker.permit()
    breaker.failed()  # a probe failed: open again, for a whole cooldown
    assert breaker.state == "open" and not breaker.permit()
    clock.now += 1.01
    assert breaker.permit()
    breaker.succeeded()  # a probe succeeded: closed, everyone again
    assert breaker.state == "closed"
    assert all(breaker.permit() for _ in range(10))
