"""One queue wait per request: the engine's slots and the fallback's slots share it.

A request that found every engine slot busy has already waited ``ENGINE_QUEUE_MS`` when the
engine guard sheds it; if the fallback then made it wait ``FALLBACK_QUEUE_MS`` again, a quick
503 could not come sooner than the two waits together (the benchmark measured a p99 of
128–143 ms against a goal of 50 ms; issue 24). So the response cache marks a shed request before
it asks the fallback, and the fallback then takes a free slot or refuses at once.

The mark lives in a context variable: the fallback runs in a task created from the request's
context, which copies it. Never holds anything but that flag.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_waited: ContextVar[bool] = ContextVar("hos_search_queue_waited", default=False)


def already_waited() -> bool:
    """Whether the current request has already waited out one queue."""
    return _waited.get()


@contextmanager
def having_waited(waited: bool = True) -> Iterator[None]:
    """Within the block (and the tasks it starts), :func:`already_waited` answers ``waited``.

    Reset on exit: aiohttp serves a keep-alive connection's requests in one task, so a flag
    left set would follow the connection's next request.
    """
    token = _waited.set(waited)
    try:
        yield
    finally:
        _waited.reset(token)
