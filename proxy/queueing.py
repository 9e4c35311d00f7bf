"""One queue budget per request: the engine's slots and the fallback's slots share it.

A request that found every engine slot busy has already waited ``ENGINE_QUEUE_MS`` when the
engine guard sheds it; if the fallback then made it wait ``FALLBACK_QUEUE_MS`` again, a quick
503 could not come sooner than the two waits together (the benchmark measured a p99 of
128–143 ms against a goal of 50 ms; issue 24). So the response cache records how long a shed
request has waited before it asks the fallback, and the fallback waits only for what is left
of its own ``FALLBACK_QUEUE_MS``: with the defaults (25 ms each) it takes a free slot or refuses
at once; an operator who gives the fallback a longer queue than the engine's keeps the
difference.

The record lives in a context variable: the fallback runs in a task created from the request's
context, which copies it.

A request that will be shed should know it at once, not after waiting out its budget: with the
engine's slots and then the fallback's all busy at twice the engine's capacity, every 503 still
waited ``ENGINE_QUEUE_MS`` first, and the queue of those waiting slowed the worker's loop for
the rest (the benchmark's 503 p99 stayed at 128–143 ms; issue 24). So each queue keeps a
:class:`ServiceTime` — how long a slot is held, as a moving average — and a request that finds
every slot busy asks :meth:`ServiceTime.expected_wait` how long it would wait behind the ones
already waiting; beyond its budget it is shed at once, having waited nothing.

Never holds anything but those durations: no request, no clock of its own (the caller's).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Final

_waited: ContextVar[float] = ContextVar("hos_search_queue_waited", default=0.0)

# Weight of the newest hold in the moving average: about the last ten holds count, so the
# estimate follows an engine that slows down within a fraction of a second at hundreds per second.
SERVICE_TIME_WEIGHT: Final = 0.1


class ServiceTime:
    """How long one of a queue's slots is held, as an exponentially weighted moving average."""

    __slots__ = ("seconds",)

    def __init__(self) -> None:
        self.seconds = 0.0  # nothing measured yet: no wait is predicted, a request waits its budget

    def observe(self, held: float) -> None:
        self.seconds = held if self.seconds == 0.0 else self.seconds + SERVICE_TIME_WEIGHT * (held - self.seconds)

    def expected_wait(self, waiting: int, slots: int) -> float:
        """Seconds a request arriving with every slot busy and ``waiting`` ahead of it would
        wait: slots free up ``slots`` per hold, first come first served."""
        return (waiting + 1) * self.seconds / slots


def already_waited() -> float:
    """Seconds the current request has already spent waiting in a queue."""
    return _waited.get()


@contextmanager
def having_waited(seconds: float) -> Iterator[None]:
    """Within the block (and the tasks it starts), :func:`already_waited` answers ``seconds``.

    Reset on exit: aiohttp serves a keep-alive connection's requests in one task, so a record
    left set would follow the connection's next request.
    """
    token = _waited.set(seconds)
    try:
        yield
    finally:
        _waited.reset(token)
