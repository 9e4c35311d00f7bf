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
context, which copies it. Never holds anything but that duration.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_waited: ContextVar[float] = ContextVar("hos_search_queue_waited", default=0.0)


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
