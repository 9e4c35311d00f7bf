"""One queue budget per request: a request shed by the engine's queue waits only for what is left.

Against a real Postgres whose products table a test transaction locks, so the fallback's one
slot stays busy for exactly as long as the test wants. No clock is read: whether a request
waited shows in the fallback's own ``waiting`` count and in which tasks have finished.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from proxy.cache.freshness import CatalogView, Policy
from proxy.cache.l1 import LRU
from proxy.cache.notices import FillNotices
from proxy.cache.response_cache import Produced, ResponseCache
from proxy.errors import BREAKER_OPEN, ENGINE_BUSY, EngineSkipped, Overloaded
from proxy.fallback.postgres import PostgresFallback
from proxy.metrics import ProxyMetrics
from proxy.params import SearchRequest
from proxy.queueing import ServiceTime, already_waited, having_waited
from tests.indexer_support import eventually

WAND = SearchRequest(q="wand")


async def _settle() -> None:
    """A few turns of the loop: enough for a task to reach its first real wait."""
    for _ in range(10):
        await asyncio.sleep(0)


async def _hold_the_only_slot(locker: asyncpg.Connection, backend: PostgresFallback) -> asyncio.Task[Any]:
    """Lock the products table (``locker`` rolls back to free it) and start a search that takes
    the fallback's only slot and waits on the lock; returned once it holds the slot."""
    await locker.execute("BEGIN; LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
    holder = asyncio.create_task(backend.search(WAND))

    async def slot_taken() -> bool:
        return backend.in_flight == 1

    await eventually(slot_taken, timeout=10, what="the first search holding the only slot")
    return holder


async def test_a_shed_request_waits_only_for_what_is_left_of_its_queue_budget(database_url: str) -> None:
    locker = await asyncpg.connect(database_url)
    backend = await PostgresFallback.open(
        database_url, pool_size=1, statement_timeout_ms=30_000, max_concurrency=1, queue_wait=60.0
    )
    try:
        holder = await _hold_the_only_slot(locker, backend)
        with having_waited(60.0):  # its whole budget spent queueing for an engine slot
            shed = asyncio.create_task(backend.search(WAND))
        with having_waited(1.0):  # some of it: it may wait for the rest
            partly = asyncio.create_task(backend.search(WAND))
        patient = asyncio.create_task(backend.search(WAND))  # not shed: it may wait its turn
        await _settle()
        assert shed.done() and isinstance(shed.exception(), Overloaded)
        assert not partly.done() and not patient.done() and backend.waiting == 2

        await locker.execute("ROLLBACK")
        await asyncio.gather(holder, partly, patient)
        # With a slot free, a shed request is served like any other.
        with having_waited(60.0):
            served = asyncio.create_task(backend.search(WAND))
        body, _relaxed = await served
        assert body["hits"]["total"]["value"] == 0
    finally:
        await backend.close()
        await locker.close()


async def test_a_request_that_would_wait_past_its_budget_gets_its_503_at_once(database_url: str) -> None:
    locker = await asyncpg.connect(database_url)
    backend = await PostgresFallback.open(
        database_url, pool_size=1, statement_timeout_ms=30_000, max_concurrency=1, queue_wait=60.0
    )
    try:
        backend.service.observe(40.0)  # queries have held their slot 40 s
        holder = await _hold_the_only_slot(locker, backend)
        first = asyncio.create_task(backend.search(WAND))  # expects the slot in 40 s: it waits
        await _settle()
        second = asyncio.create_task(backend.search(WAND))  # behind it, 80 s: more than its 60
        await _settle()
        assert second.done() and isinstance(second.exception(), Overloaded)
        assert not first.done() and backend.waiting == 1

        await locker.execute("ROLLBACK")
        await asyncio.gather(holder, first)
    finally:
        await backend.close()
        await locker.close()


def test_the_expected_wait_is_the_queue_ahead_at_the_measured_service_time() -> None:
    service = ServiceTime()
    assert service.expected_wait(waiting=100, slots=1) == 0.0  # nothing measured: nobody is turned away
    service.observe(0.2)
    assert service.expected_wait(waiting=0, slots=4) == pytest.approx(0.05)
    assert service.expected_wait(waiting=7, slots=4) == pytest.approx(0.4)
    for _ in range(100):  # the engine slowed down: the estimate follows
        service.observe(1.0)
    assert service.seconds == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize(("reason", "waited"), [(ENGINE_BUSY, 0.025), (BREAKER_OPEN, 0.0)])
async def test_the_cache_passes_the_time_a_shed_request_queued_to_its_fallback_only(reason: str, waited: float) -> None:
    policy = Policy()
    view = CatalogView(policy)
    view.follow(1, time.time())
    cache = ResponseCache(policy, LRU(10, 1 << 20), None, view, FillNotices(), ProxyMetrics(), lock_wait=0.1)
    seen: list[float] = []

    async def engine() -> Produced:
        raise EngineSkipped(reason, waited)

    async def fallback() -> Produced:
        seen.append(already_waited())
        return Produced(b"{}", frozenset())

    served = await cache.answer("search", f"search:v2?q={reason}", engine, fallback)
    assert served.backend == "postgres" and seen == [waited]
    assert already_waited() == 0.0  # the request's own context is left unmarked


async def test_a_request_the_fallback_would_refuse_gets_its_503_without_a_turn_of_the_loop(database_url: str) -> None:
    """Each turn of a saturated worker's loop runs every other request's ready work first: a
    shed request that went through the fallback's own task waited three of them for its 503."""
    locker = await asyncpg.connect(database_url)
    backend = await PostgresFallback.open(
        database_url, pool_size=1, statement_timeout_ms=30_000, max_concurrency=1, queue_wait=0.025
    )
    policy = Policy()
    view = CatalogView(policy)
    view.follow(1, time.time())
    metrics = ProxyMetrics()

    def cache(fallback_full: Callable[[float], bool] | None = None) -> ResponseCache:
        return ResponseCache(
            policy,
            LRU(10, 1 << 20),
            None,
            view,
            FillNotices(),
            metrics,
            lock_wait=0.1,
            enabled=False,
            fallback_full=fallback_full,
        )

    async def engine() -> Produced:
        raise EngineSkipped(ENGINE_BUSY, 0.025)  # waited its whole engine queue budget

    async def fallback() -> Produced:
        await backend.search(WAND)
        return Produced(b"{}", frozenset())

    try:
        holder = await _hold_the_only_slot(locker, backend)
        assert backend.would_shed(0.025) and not backend.would_shed(0.0)

        first_step = cache(fallback_full=backend.would_shed).answer("search", "k", engine, fallback)
        with pytest.raises(Overloaded):
            first_step.send(None)  # raised in the request's first step: it never yielded
        assert metrics.registry.get_sample_value("search_proxy_fallback_rejected_total") == 1

        # Without the cache asking first, the same 503 comes from the fallback's task, turns later.
        through_the_task = asyncio.ensure_future(cache().answer("search", "k", engine, fallback))
        turns = 0
        while not through_the_task.done():
            await asyncio.sleep(0)
            turns += 1
        assert isinstance(through_the_task.exception(), Overloaded) and turns > 1

        await locker.execute("ROLLBACK")
        await holder
    finally:
        await backend.close()
        await locker.close()
