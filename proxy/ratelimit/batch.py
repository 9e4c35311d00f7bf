"""Rate-limit decisions sent to Redis in batches: one round trip for every decision asked for
while the previous round trip was out.

A decision per request, each its own ``EVALSHA``, made the limiter the dearest step of a cache
hit: with 10,000 distinct clients a worker served 0.24 × its throughput without the limiter
(``benchmarks/ratelimit.py``), the round trips' own cost (a command to write, a reply to read, a
wake-up) being most of it. :class:`Batcher` keeps at most one round trip in flight; decisions
asked for meanwhile wait and leave together, as one script call
(:meth:`~proxy.ratelimit.script.RedisBuckets.take_many`), when it is back. When Redis is idle a
decision leaves at once (on the next turn of the event loop, with whatever else arrived in the
same turn), so batches grow with the load and a quiet worker adds no delay. Decisions stay
exact: the script applies them one after another, atomically.

Every decision has a deadline, ``timeout`` after it was asked for, and no one waits past it: a
round trip is bounded by the earliest deadline among its decisions, and decisions whose deadline
passed while the previous round trip was out fail at once without being sent. A failed or
timed-out round trip fails every decision in it with the same exception (the caller falls back).
A batch holds at most :data:`MAX_BATCH` decisions, so one script never keeps Redis busy for long.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Final

from proxy.ratelimit.bucket import Decision
from proxy.ratelimit.script import RedisBuckets, Take
from proxy.tasks import cancel_and_wait

MAX_BATCH: Final = 256


class Batcher:
    """Decisions to Redis, batched. ``observe(seconds, failed)`` hears of each round trip."""

    def __init__(
        self,
        buckets: RedisBuckets,
        timeout: float,
        observe: Callable[[float, bool], None] = lambda seconds, failed: None,
    ) -> None:
        self._buckets = buckets
        self._timeout = timeout
        self._observe = observe
        # Waiting to leave, oldest first: what to take, who waits, and until when (loop time).
        self._pending: list[tuple[Take, asyncio.Future[Decision], float]] = []
        self._scheduled = False
        self._flight: asyncio.Task[None] | None = None
        self._flying: list[asyncio.Future[Decision]] = []  # the waiters of the round trip out
        self._closed = False

    def take(
        self, client_id: str, cost: float, capacity: float, period_ms: int, lease: float = 0.0
    ) -> asyncio.Future[Decision]:
        """The decision for one request (and a lease, if asked for and granted), once a round trip
        has brought it (or an exception)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Decision] = loop.create_future()
        self._pending.append((Take(client_id, cost, capacity, period_ms, lease), waiter, loop.time() + self._timeout))
        if self._flight is None and not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._send)
        return waiter

    def _send(self) -> None:
        self._scheduled = False
        if self._flight is not None or not self._pending or self._closed:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        live: list[tuple[Take, asyncio.Future[Decision]]] = []
        earliest = math.inf  # the round trip's bound: the first deadline among those it carries
        for take, waiter, deadline in batch:
            if waiter.done():  # its request was cancelled
                continue
            if deadline <= now:  # waited out the previous round trip
                waiter.set_exception(TimeoutError("no rate-limit decision in time: Redis is slow"))
                continue
            live.append((take, waiter))
            earliest = min(earliest, deadline)
        if live:
            self._flying = [waiter for _, waiter in live]
            self._flight = loop.create_task(self._round_trip(live, earliest - now))
        elif self._pending:
            self._send()

    async def _round_trip(self, batch: list[tuple[Take, asyncio.Future[Decision]]], budget: float) -> None:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(budget):
                decisions = await self._buckets.take_many([take for take, _ in batch])
        except BaseException as exc:  # every waiter hears of it, whatever it is
            self._observe(time.perf_counter() - started, True)
            failure = exc if isinstance(exc, Exception) else ConnectionError("rate-limit round trip cancelled")
            for _, waiter in batch:
                if not waiter.done():  # a waiter's own request may have been cancelled
                    waiter.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
        else:
            self._observe(time.perf_counter() - started, False)
            for (_, waiter), decision in zip(batch, decisions, strict=True):
                if not waiter.done():
                    waiter.set_result(decision)
        finally:
            self._flight = None
            if self._pending:
                self._send()

    async def close(self) -> None:
        """Stop: every decision still waiting fails, the round trip in flight is cancelled."""
        self._closed = True
        if self._flight is not None:
            await cancel_and_wait(self._flight)
        # A round trip cancelled before it began never told its waiters.
        waiters = self._flying + [waiter for _, waiter, _ in self._pending]
        self._pending = []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionError("the rate limiter is closed"))
