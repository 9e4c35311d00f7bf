"""Announcing what changed in the index: the catalog generation in Redis (``catalog.cache_generation``).

After a batch that changed the index, the indexer marks the tags of what changed (``None``:
everything, after a full rebuild). A background task turns marks into bumps: ``INCR`` of
:func:`~catalog.cache_generation.generation_key`, then ``PUBLISH`` on the channel of the same name of
an :class:`~catalog.cache_generation.Announcement` — the new value and the tags marked since the last
bump. At most one bump per ``min_interval``: the marks of a burst coalesce into one.

The engine makes a write searchable only at its next refresh, so the streaming indexer refreshes
the index right before each announcement (``before_announcement``, at most once per
``min_interval``): a proxy that re-reads on hearing of a change reads the change. When that
refresh did not succeed on every shard (or there is none), every tag is announced once more
``settle`` seconds after its first announcement (the live index's refresh interval plus a margin,
:func:`settle_after`), by when the periodic refresh has made it searchable. A re-announcement is
an ordinary bump (a new value), merged with any tags marked meanwhile, and counts against
``min_interval`` like any other. It is not made after a refresh that succeeded: it would turn
every cached answer showing the product stale a second time, refilled already with the new data
(issue 24: two engine requests per change and per hot page, and a miss for every page asked
between the two announcements).

Redis being down never blocks indexing: a failed bump is logged and counted, its tags stay
pending (first announcements and re-announcements alike), and it is retried every ``retry``
seconds until Redis answers — no tag is lost. A pending set holds at most
:data:`~catalog.cache_generation.MAX_TAGS` tags, beyond which it becomes "everything", so an outage
under load costs bounded memory.

:class:`Schedule` is the timing, pure (it is told the time); :meth:`Generation.run` follows it
against Redis; :meth:`Generation.bump` announces once, on its own (a one-shot reindex calls it).
This module never reads Postgres or the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeAlias

from catalog.cache_generation import MAX_TAGS, Announcement, generation_key
from catalog.config import interval_seconds
from catalog.redis_client import REDIS_ERRORS, RedisClient
from indexer.metrics import IndexerMetrics

log = logging.getLogger("hos_search.indexer.generation")

# What is to be announced: some tags, or None for everything. An empty set is nothing.
Tags: TypeAlias = frozenset[str] | None
NOTHING: Tags = frozenset()

# A write is searchable after the next refresh; the margin covers the refresh itself.
_SETTLE_MARGIN_S = 0.1
# The engine's default refresh interval (1 s), for "-1" (no periodic refresh) or the unreadable.
_DEFAULT_SETTLE_S = 1.0 + _SETTLE_MARGIN_S


def settle_after(refresh_interval: str) -> float:
    """Seconds after which a write is searchable, for an index refreshed every ``refresh_interval``."""
    seconds = interval_seconds(refresh_interval)
    return _DEFAULT_SETTLE_S if seconds is None else seconds + _SETTLE_MARGIN_S


def merge(a: Tags, b: Tags) -> Tags:
    """Both; everything when either is, or when there are more tags than an announcement lists."""
    if a is None or b is None:
        return None
    both = a | b
    return None if len(both) > MAX_TAGS else both


def _some(tags: Tags) -> bool:
    return tags is None or bool(tags)


@dataclass(frozen=True, slots=True)
class Bump:
    """One bump's content: ``first`` is announced for the first time, ``again`` once more."""

    first: Tags
    again: Tags
    again_due: float  # when the earliest of ``again`` fell due (for putting it back on failure)

    @property
    def tags(self) -> Tags:
        return merge(self.first, self.again)


class Schedule:
    """When to bump and with which tags; times are ``time.monotonic()`` seconds, passed in."""

    def __init__(self, *, min_interval: float, settle: float, retry: float) -> None:
        self._min_interval = min_interval
        self._settle = settle
        self._retry = retry
        self._fresh: Tags = NOTHING  # marked, not yet announced
        self._repeats: deque[tuple[float, Tags]] = deque()  # (due, tags announced once), by due
        self._not_before = -math.inf

    def mark(self, tags: Tags) -> None:
        self._fresh = merge(self._fresh, tags)

    def due_at(self) -> float | None:
        """When the next bump is due (possibly in the past); None when nothing waits."""
        if _some(self._fresh):
            earliest = -math.inf
        elif self._repeats:
            earliest = self._repeats[0][0]
        else:
            return None
        return max(earliest, self._not_before)

    def take(self, now: float) -> Bump:
        """What a bump at ``now`` announces; it is no longer pending until :meth:`failed`."""
        first, self._fresh = self._fresh, NOTHING
        again, again_due = NOTHING, math.inf
        while self._repeats and self._repeats[0][0] <= now:
            due, tags = self._repeats.popleft()
            again, again_due = merge(again, tags), min(again_due, due)
        return Bump(first, again, again_due)

    def sent(self, bump: Bump, now: float, *, searchable: bool = False) -> None:
        """``bump`` was announced at ``now``: its first announcements are repeated ``settle`` later,
        unless what it announces was known to be ``searchable`` when it was announced."""
        if _some(bump.first) and not searchable:
            # Appending keeps the queue in due order: ``now`` only grows and ``settle`` is fixed.
            self._repeats.append((now + self._settle, bump.first))
        self._not_before = now + self._min_interval

    def failed(self, bump: Bump, now: float) -> None:
        """``bump`` was not announced: all of it is pending again, tried again ``retry`` later."""
        self._fresh = merge(bump.first, self._fresh)
        if _some(bump.again):
            # Due no later than anything left in the queue (take() took everything due by then).
            self._repeats.appendleft((bump.again_due, bump.again))
        self._not_before = now + self._retry


class Generation:
    def __init__(
        self,
        client: RedisClient,
        prefix: str,
        metrics: IndexerMetrics,
        *,
        min_interval: float = 0.25,
        settle: float = _DEFAULT_SETTLE_S,
        retry: float = 1.0,
        before_announcement: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self._client = client
        self._before_announcement = before_announcement
        self.key = generation_key(prefix)
        self._metrics = metrics
        self._schedule = Schedule(min_interval=min_interval, settle=settle, retry=retry)
        self._marked = asyncio.Event()

    def mark(self, tags: Iterable[str] | None) -> None:
        """The index changed what ``tags`` name (None: anything); announced within ``min_interval``."""
        self._schedule.mark(None if tags is None else frozenset(tags))
        self._marked.set()

    async def run(self) -> None:
        """Bump as the schedule says until cancelled."""
        while True:
            self._marked.clear()  # before reading the schedule: a later mark wakes the wait below
            due = self._schedule.due_at()
            now = time.monotonic()
            if due is None or due > now:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._marked.wait(), None if due is None else due - now)
                continue
            bump = self._schedule.take(now)
            searchable = self._before_announcement is not None and await self._make_searchable()
            announced = await self.bump(bump.tags)
            if announced is None:
                self._schedule.failed(bump, time.monotonic())
            else:
                self._schedule.sent(bump, time.monotonic(), searchable=searchable)

    async def _make_searchable(self) -> bool:
        """Before an announcement: make what it announces searchable (``before_announcement``);
        whether that is known to have worked.

        A proxy re-reads an answer as soon as it hears of a change; before the engine's next
        refresh it would read — and cache as current — the old answer. Waiting for the periodic
        refresh is not enough either: an engine under load lags behind its interval (seen in
        ``benchmarks/cache.py``: prices visible only after 15 s). At most one refresh per
        ``min_interval``. A failure here is logged and the announcement goes out anyway (and
        again ``settle`` later).
        """
        assert self._before_announcement is not None
        try:
            return await self._before_announcement()
        except Exception as exc:  # an engine error must not stop the announcements
            log.warning("could not refresh the index before an announcement: %s", type(exc).__name__)
            return False

    async def bump(self, tags: Iterable[str] | None) -> int | None:
        """INCR the generation and announce ``tags`` (None: everything); the new value, or None
        (logged and counted) when Redis did not answer."""
        try:
            value = await self._client.incr(self.key)
            # On a Redis Cluster a classic PUBLISH reaches every node, so every proxy's subscriber.
            await self._client.publish(self.key, Announcement.of(int(value), tags).encode())
        except REDIS_ERRORS as exc:
            self._metrics.errors.labels(kind="redis").inc()
            log.warning("generation bump failed: %s", exc)
            return None
        self._metrics.generation_bumps.inc()
        return int(value)
