"""When the supervisor restarts a worker that exited: at once the first time, later each time
it exits again soon after starting.

A worker that cannot start (a synonym file broken since the proxy started, a port taken, a bad
setting read at import) exits by itself within a second of every start. Restarted after a fixed second, it
spun a crash loop: a new Python process a second, each importing the whole proxy, the log a line
a second for as long as nobody looked. The delay now doubles with each exit that follows a short
life, up to :data:`CAP_S`, and starts again from :data:`FIRST_S` once a worker has lived
:data:`STABLE_S`. A worker killed by a signal is restarted after :data:`FIRST_S` and does not
count: something outside killed it. Pure: the caller passes the clock's readings (``proxy.server.supervise``).
"""

from __future__ import annotations

from typing import Final

FIRST_S: Final = 1.0  # the first restart's delay: a crash is not worth a busy loop either
CAP_S: Final = 30.0  # a worker that cannot start is tried twice a minute, never less often
STABLE_S: Final = 30.0  # a worker that lived this long started fine: its exit is a new story


class RestartBackoff:
    """One worker slot's restart delays."""

    __slots__ = ("_quick_exits", "_started_at")

    def __init__(self) -> None:
        self._quick_exits = 0
        self._started_at: float | None = None

    def started(self, now: float) -> None:
        self._started_at = now

    def exited(self, now: float, *, by_signal: bool = False) -> float:
        """The worker started last has exited at ``now``: seconds to wait before the next one.

        ``by_signal``: it was killed (the OOM killer, an operator's SIGKILL), not ended by itself:
        that says nothing about whether a worker can start, so it is restarted after
        :data:`FIRST_S` and the count of exits in a row stays as it was (a test that SIGKILLs
        serving workers ten times in a row waited 30 s for the sixth replacement when every
        short life counted)."""
        if self._started_at is not None and now - self._started_at >= STABLE_S:
            self._quick_exits = 0
        if by_signal:
            return FIRST_S
        self._quick_exits += 1
        return min(FIRST_S * 2.0 ** min(self._quick_exits - 1, 16), CAP_S)
