"""The open model for Locust: iterations start on k6's schedule, whichever VU is free takes one.

Idle VUs each hold the next start time and sleep until it; a VU that becomes free only after
its next start time has passed (by more than ``tolerance_s``, for scheduling jitter) proves that
every VU was busy then, and that iteration is *dropped*, as k6 drops it (``dropped_iterations``)
— the runner then asks for another VU, up to ``maxVUs``. Pure: the caller passes the clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

DEFAULT_TOLERANCE_S: Final = 0.05


@dataclass
class ArrivalClock:
    offsets_ms: Iterator[float]
    tolerance_s: float = DEFAULT_TOLERANCE_S
    started_at: float | None = None
    scheduled: int = 0
    dropped: int = 0
    exhausted: bool = field(default=False)

    def take(self, now: float) -> tuple[float | None, int]:
        """The next start time (on the caller's clock, seconds) for a VU free at ``now``, or None
        when the schedule is over; and how many start times this call found missed and dropped."""
        if self.started_at is None:
            self.started_at = now  # the schedule starts when the first VU asks
        dropped = 0
        for offset in self.offsets_ms:
            self.scheduled += 1
            due = self.started_at + offset / 1000
            if now - due > self.tolerance_s:
                dropped += 1
                continue
            self.dropped += dropped
            return due, dropped
        self.dropped += dropped
        self.exhausted = True
        return None, dropped
