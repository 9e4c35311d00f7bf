"""One queue wait per request: a request shed by the engine's queue waits for no fallback slot.

Against a real Postgres whose products table a test transaction locks, so the fallback's one
slot stays busy for exactly as long as the test wants. No clock is read: whether a request
waited shows in the fallback's own ``waiting`` count and in which tasks have finished.
"""

from __future__ import annotations

import asyncio
import time

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
from proxy.queueing import already_waited, having_waited
from tests.indexer_support import eventually

WAND = SearchRequest(q="wand")


async def _settle() -> None:
    """A few turns of the loop: enough for a task to reach its first real wait."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_shed_request_is_refused_at_once_when_every_fallback_slot_is_busy(database_url: str) -> None:
    locker = await asyncpg.connect(database_url)
    backend = await PostgresFallback.open(
        database_url, pool_size=1, statement_timeout_ms=30_000, max_concurrency=1, queue_wait=60.0
    )
    try:
        await locker.execute("BEGIN; LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
        holder = asyncio.create_task(backend.search(WAND))

        async def slot_taken() -> bool:
            return backend.in_flight == 1

        await eventually(slot_taken, timeout=10, what="the first search holding the only slot")
        with having_waited():
            shed = asyncio.create_task(backend.search(WAND))
        patient = asyncio.create_task(backend.search(WAND))  # not shed: it may wait its turn
        await _settle()
        assert shed.done() and isinstance(shed.exception(), Overloaded)
        assert not patient.done() and backend.waiting == 1

        await locker.execute("ROLLBACK")
        await asyncio.gather(holder, patient)
        # With a slot free, a shed request is served like any other.
        with having_waited():
            served = asyncio.create_task(backend.search(WAND))
        body, _relaxed = await served
        assert body["hits"]["total"]["value"] == 0
    finally:
        await backend.close()
        await locker.close()


@pytest.mark.parametrize(("reason", "waited"), [(ENGINE_BUSY, True), (BREAKER_OPEN, False)])
async def test_the_cache_marks_a_request_shed_by_a_busy_engine_and_only_for_its_fallback(
    reason: str, waited: bool
) -> None:
    policy = Policy()
    view = CatalogView(policy)
    view.follow(1, time.time())
    cache = ResponseCache(policy, LRU(10, 1 << 20), None, view, FillNotices(), ProxyMetrics(), lock_wait=0.1)
    seen: list[bool] = []

    async def engine() -> Produced:
        raise EngineSkipped(reason)

    async def fallback() -> Produced:
        seen.append(already_waited())
        return Produced(b"{}", frozenset())

    served = await cache.answer("search", f"search:v2?q={reason}", engine, fallback)
    assert served.backend == "postgres" and seen == [waited]
    assert not already_waited()  # the request's own context is left unmarked
