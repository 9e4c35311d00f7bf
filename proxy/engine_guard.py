"""The engine guard: every engine request of a worker passes a circuit breaker and a slot.

Without it, an engine that hangs or is overloaded held every request for the whole engine
timeout: 400 concurrent searches for 15 s on the dev engine → 81 % waited the full 2 s and then
got a 503, while the proxy held every connection. So, per worker:

- **Breaker** (``proxy.breaker``, :meth:`~proxy.breaker.Breaker.permit`): consecutive engine
  failures (errors and timeouts) open it; while open, requests skip the engine at once. After
  the cooldown a few probes decide whether it closes.
- **Slots**: at most ``slots`` engine requests in flight (sized from the engine client's
  connection pool: more would only queue inside the client, where nobody can see them). A
  request waits for a slot at most ``queue_wait``; then it is *shed*. One that would wait
  longer — every slot busy, and the ones already waiting ahead of it take longer than that at
  the measured service time (``proxy.queueing.ServiceTime``) — is shed at once, without waiting.

A skipped or shed request raises :class:`~proxy.errors.EngineSkipped` (a ``BackendUnavailable``),
so the caller goes on as for a failed engine: the cache serves a stale answer, or the Postgres
fallback answers within its own cap, or the client gets a quick 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from proxy.breaker import Breaker
from proxy.errors import BREAKER_OPEN, ENGINE_BUSY, BackendUnavailable, EngineSkipped
from proxy.queueing import ServiceTime

T = TypeVar("T")


class EngineGuard:
    """``call(operation)`` runs one engine request under the breaker and a slot.

    ``on_skip(reason)`` hears of each request not sent (``breaker_open``, ``engine_busy``);
    ``on_state(state)`` of each change of the breaker's state.
    """

    def __init__(
        self,
        breaker: Breaker,
        *,
        slots: int,
        queue_wait: float,
        on_skip: Callable[[str], None] = lambda reason: None,
        on_state: Callable[[str], None] = lambda state: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if slots < 1 or queue_wait < 0:
            raise ValueError("an engine guard needs slots >= 1 and queue_wait >= 0")
        self.breaker = breaker
        self.slots = slots
        self._free = asyncio.Semaphore(slots)
        self._queue_wait = queue_wait
        self._on_skip = on_skip
        self._on_state = on_state
        self._state = breaker.state
        self._clock = clock
        self.service = ServiceTime()
        self.in_flight = 0
        self.waiting = 0

    def _skip(self, reason: str, waited: float = 0.0) -> EngineSkipped:
        self._on_skip(reason)
        return EngineSkipped(reason, waited)

    def _report(self) -> None:
        state = self.breaker.state
        if state != self._state:
            self._state = state
            self._on_state(state)

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        breaker = self.breaker
        if not breaker.permit():
            self._report()  # open, or cooled down with every probe out
            raise self._skip(BREAKER_OPEN)
        busy = self._free.locked()
        if busy and self.service.expected_wait(self.waiting, self.slots) > self._queue_wait:
            # It would be shed after its whole wait anyway: shed now, with its budget unspent.
            breaker.abandoned()
            raise self._skip(ENGINE_BUSY)
        try:
            if busy:
                # Every slot busy: wait briefly for one, never for the engine's whole timeout.
                self.waiting += 1
                try:
                    async with asyncio.timeout(self._queue_wait):
                        await self._free.acquire()
                finally:
                    self.waiting -= 1
            else:
                await self._free.acquire()  # free: returns at once
        except TimeoutError:
            breaker.abandoned()
            raise self._skip(ENGINE_BUSY, self._queue_wait) from None
        except BaseException:
            breaker.abandoned()
            raise
        self.in_flight += 1
        started = self._clock()
        try:
            result = await operation()
        except BackendUnavailable:
            breaker.failed()
            raise
        except BaseException:
            breaker.abandoned()
            raise
        else:
            breaker.succeeded()
            return result
        finally:
            self.service.observe(self._clock() - started)
            self.in_flight -= 1
            self._free.release()
            self._report()
