"""Fill notices: a worker waiting for another process's fill is woken by a pub/sub message.

The process that filled an entry publishes its digest on ``{prefix}cache:filled``
(``proxy.cache.l2``); each worker's subscriber (``proxy.cache.subscriber``) hands every
digest it hears to :meth:`FillNotices.deliver`, which wakes whoever :meth:`expect`-ed it.
Register *before* the last look at Redis, so a fill that lands in between is not missed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class FillNotices:
    def __init__(self) -> None:
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}

    @contextlib.contextmanager
    def expect(self, key_digest: str) -> Iterator[asyncio.Future[None]]:
        """A future done when ``key_digest`` is announced; deregistered on exit."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiting.setdefault(key_digest, [])
        waiters.append(future)
        try:
            yield future
        finally:
            waiters.remove(future)
            if not waiters:
                del self._waiting[key_digest]

    def deliver(self, key_digest: str) -> None:
        for future in self._waiting.get(key_digest, ()):
            if not future.done():
                future.set_result(None)
