"""The catalog generation counter in Redis: proxies drop cached results when it changes.

After a batch that changed the index, the indexer marks the catalog dirty; a background task
turns marks into ``INCR {prefix}catalog:generation`` + ``PUBLISH {prefix}catalog:generation
<new value>``, at most once per ``min_interval`` (bursts coalesce), plus one trailing bump
``settle`` seconds after the last one — Elasticsearch makes writes searchable only at its next
refresh (1 s), so a proxy that re-cached in between is told once more.

Redis being down never blocks indexing: a failed bump is logged, counted and retried every
``retry`` seconds until Redis answers, so the last change before an outage is still announced.
This module never reads Postgres or the engine.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from indexer.metrics import IndexerMetrics

log = logging.getLogger("hos_search.indexer.generation")


def generation_key(prefix: str) -> str:
    """The Redis key (and pub/sub channel) of the catalog generation."""
    return f"{prefix}catalog:generation"


class Generation:
    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        metrics: IndexerMetrics,
        *,
        min_interval: float = 0.25,
        settle: float = 1.1,
        retry: float = 1.0,
    ) -> None:
        self._client = client
        self.key = generation_key(prefix)
        self._metrics = metrics
        self._min_interval = min_interval
        self._settle = settle
        self._retry = retry
        self._dirty = asyncio.Event()

    def mark(self) -> None:
        """The index changed; a bump will follow within ``min_interval``."""
        self._dirty.set()

    async def run(self) -> None:
        """Bump on marks until cancelled."""
        while True:
            await self._dirty.wait()
            while self._dirty.is_set():
                self._dirty.clear()
                if await self.bump() is None:
                    await asyncio.sleep(self._retry)
                    self._dirty.set()  # Redis is down: keep trying until it answers
                    continue
                await asyncio.sleep(self._min_interval)
            try:
                await asyncio.wait_for(self._dirty.wait(), self._settle)
            except TimeoutError:
                if await self.bump() is None:  # the trailing bump, after the engine's refresh
                    self._dirty.set()

    async def bump(self) -> int | None:
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.incr(self.key)
                (value,) = await pipe.execute()
            await self._client.publish(self.key, value)
        except (RedisError, OSError) as exc:
            self._metrics.errors.labels(kind="redis").inc()
            log.warning("generation bump failed (%s); retrying in %.1fs until Redis answers", exc, self._retry)
            return None
        self._metrics.generation_bumps.inc()
        return int(value)
