"""A circuit breaker: stop asking a dependency that keeps failing, and try it again later.

``failures`` failures in a row open it for ``cooldown`` seconds, during which callers skip the
dependency without waiting on it. One failure alone does not: a burst that keeps the event loop
busy can push a single answer past its timeout while the dependency is fine. After the cooldown
the breaker is half-open: the next call probes, success closes it, failure opens it again at
once. Pure state, no I/O: callers report outcomes; the clock is injectable for tests.

Used around Redis by the cache's L2 tier (``proxy.cache.l2``); meant for every dependency on a
request's path (the rate limiter's Redis, the engine).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Breaker:
    def __init__(
        self,
        *,
        failures: int = 3,
        cooldown: float = 1.0,
        probes: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or cooldown < 0 or probes < 1:
            raise ValueError("a breaker needs failures >= 1, cooldown >= 0 and probes >= 1")
        self._max_failures = failures
        self._cooldown = cooldown
        self._probes = probes
        self._clock = clock
        self._failures = 0  # in a row
        self._open_until = 0.0
        self._tripped = False  # opened, and not closed by a success since
        self._probing = 0  # permits given while half-open, not reported yet

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open`` (cooled down, waiting for a probe's outcome)."""
        if not self.closed:
            return "open"
        return "half_open" if self._tripped else "closed"

    def permit(self) -> bool:
        """Whether to ask the dependency now; half-open, only ``probes`` callers at a time."""
        if not self.closed:
            return False
        if not self._tripped:
            return True
        if self._probing >= self._probes:
            return False
        self._probing += 1
        return True

    def abandoned(self) -> None:
        """A permitted call ended without an outcome: its probe slot is free again."""
        if self._probing:
            self._probing -= 1

    @property
    def closed(self) -> bool:
        """False while open: skip the dependency. True when closed or half-open (probe it)."""
        return self._clock() >= self._open_until

    def succeeded(self) -> None:
        self._failures = 0
        self._tripped = False
        self._probing = 0

    def failed(self) -> bool:
        """Count a failure; True when it opened the breaker (the caller may log that once).

        A failure reported while open (a call already in flight when it opened) changes nothing.
        """
        if not self.closed:
            return False
        self._failures += 1
        if self._failures < self._max_failures:
            return False
        # Half-open after the cooldown: one more failure reopens at once.
        self._failures = self._max_failures - 1
        self._open_until = self._clock() + self._cooldown
        self._tripped = True
        self._probing = 0
        return True
