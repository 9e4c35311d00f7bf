"""What the indexer announces on the generation channel: the tags of what changed, once it is
searchable — and once more after the periodic refresh when the indexer's own refresh failed.

The timing of :class:`indexer.generation.Schedule` is tested pure, with made-up times; the
rest runs the indexer in-process against the real servers and listens on the real channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from catalog.cache_generation import ANY_SELLER, MAX_TAGS, Announcement, generation_key, product_tag, seller_tag
from devstack.stack import StackUrls
from indexer.generation import Generation, Schedule, settle_after
from indexer.metrics import IndexerMetrics
from indexer.service import refreshed_everywhere, run_reindex
from indexer.settings import IndexerSettings
from tests.indexer_support import add_product, add_seller, eventually, indexer_settings, running_indexer

# --- the schedule, pure ---------------------------------------------------------------------


def _schedule() -> Schedule:
    return Schedule(min_interval=0.25, settle=1.1, retry=1.0)


def _bump(schedule: Schedule, now: float) -> frozenset[str] | None:
    """Take and send what is due at ``now`` (asserting it is due); the tags announced."""
    due = schedule.due_at()
    assert due is not None and due <= now, (due, now)
    bump = schedule.take(now)
    schedule.sent(bump, now)
    return bump.tags


def test_nothing_marked_nothing_due() -> None:
    assert _schedule().due_at() is None


def test_a_mark_is_announced_at_once_and_again_after_settle() -> None:
    schedule = _schedule()
    schedule.mark(frozenset({"p:1", "s:1"}))
    assert _bump(schedule, 10.0) == {"p:1", "s:1"}
    assert schedule.due_at() == pytest.approx(11.1)
    assert _bump(schedule, 11.1) == {"p:1", "s:1"}
    assert schedule.due_at() is None  # announced twice: done


def test_a_mark_searchable_when_announced_is_not_repeated() -> None:
    schedule = _schedule()
    schedule.mark(frozenset({"p:1"}))
    schedule.sent(schedule.take(10.0), 10.0, searchable=True)
    assert schedule.due_at() is None  # the refresh before it worked: once is enough
    schedule.mark(frozenset({"p:2"}))
    schedule.sent(schedule.take(10.25), 10.25, searchable=False)  # it failed: the safety net
    assert _bump(schedule, 11.35) == {"p:2"}
    assert schedule.due_at() is None


@pytest.mark.parametrize(
    ("answer", "everywhere"),
    [
        ({"_shards": {"total": 2, "successful": 2, "failed": 0}}, True),
        ({"_shards": {"total": 2, "successful": 1, "failed": 0}}, True),  # an unassigned replica
        ({"_shards": {"total": 2, "successful": 1, "failed": 1}}, False),
        ({"_shards": {"total": 1, "successful": 0, "failed": 0}}, False),
        ({}, False),
        ("", False),
    ],
)
def test_a_refresh_counts_only_when_no_shard_copy_failed(answer: object, everywhere: bool) -> None:
    assert refreshed_everywhere(answer) is everywhere


def test_marks_within_min_interval_coalesce() -> None:
    schedule = _schedule()
    schedule.mark(frozenset({"p:1"}))
    assert _bump(schedule, 10.0) == {"p:1"}
    schedule.mark(frozenset({"p:2"}))
    schedule.mark(frozenset({"p:3"}))
    assert schedule.due_at() == pytest.approx(10.25)  # not before min_interval
    assert _bump(schedule, 10.25) == {"p:2", "p:3"}
    assert _bump(schedule, 11.1) == {"p:1"}
    assert _bump(schedule, 11.35) == {"p:2", "p:3"}
    assert schedule.due_at() is None


def test_a_re_announcement_carries_new_marks_and_only_those_are_repeated() -> None:
    schedule = _schedule()
    schedule.mark(frozenset({"p:1"}))
    _bump(schedule, 10.0)
    schedule.mark(frozenset({"p:2"}))
    schedule.mark(frozenset({"p:1"}))  # changed again: announced again, twice
    assert schedule.due_at() == pytest.approx(10.25)
    assert _bump(schedule, 10.25) == {"p:1", "p:2"}
    schedule.mark(frozenset({"p:3"}))
    assert _bump(schedule, 11.1) == {"p:1", "p:3"}  # the repeat of 10.0, with the new mark
    assert _bump(schedule, 11.35) == {"p:1", "p:2"}  # the repeat of 10.25
    assert _bump(schedule, 12.2) == {"p:3"}  # the repeat of 11.1's first announcement only
    assert schedule.due_at() is None


def test_a_repeat_due_within_min_interval_waits_for_it() -> None:
    schedule = _schedule()
    schedule.mark(frozenset({"p:1"}))
    _bump(schedule, 10.0)
    schedule.mark(frozenset({"p:2"}))
    _bump(schedule, 11.0)
    assert schedule.due_at() == pytest.approx(11.25)  # p:1's repeat fell due at 11.1
    assert _bump(schedule, 11.25) == {"p:1"}


def test_a_failed_bump_keeps_every_tag_and_retries() -> None:
    schedule = _schedule()
    schedule.mark(frozenset({"p:1"}))
    _bump(schedule, 10.0)
    schedule.mark(frozenset({"p:2"}))
    bump = schedule.take(11.1)
    assert bump.tags == {"p:1", "p:2"}
    schedule.failed(bump, 11.2)
    schedule.mark(frozenset({"p:3"}))
    assert schedule.due_at() == pytest.approx(12.2)  # retry, not min_interval
    bump = schedule.take(12.2)
    assert bump.tags == {"p:1", "p:2", "p:3"}
    schedule.failed(bump, 12.3)
    assert _bump(schedule, 13.3) == {"p:1", "p:2", "p:3"}
    # p:1 was a repeat: done. p:2 and p:3 were first announced at 13.3: once more after settle.
    assert schedule.due_at() == pytest.approx(14.4)
    assert _bump(schedule, 14.4) == {"p:2", "p:3"}
    assert schedule.due_at() is None


def test_everything_absorbs_tags_and_is_repeated_too() -> None:
    schedule = _schedule()
    schedule.mark(frozenset({"p:1"}))
    schedule.mark(None)
    schedule.mark(frozenset({"p:2"}))
    assert _bump(schedule, 10.0) is None
    schedule.mark(frozenset({"p:3"}))
    assert _bump(schedule, 10.25) == {"p:3"}
    assert _bump(schedule, 11.1) is None
    assert _bump(schedule, 11.35) == {"p:3"}


def test_too_many_pending_tags_become_everything() -> None:
    schedule = _schedule()
    schedule.mark(frozenset(product_tag(i) for i in range(MAX_TAGS)))
    schedule.mark(frozenset({"p:one-too-many"}))
    assert _bump(schedule, 10.0) is None


@pytest.mark.parametrize(
    ("interval", "settle"),
    [("1s", 1.1), ("500ms", 0.6), ("2s", 2.1), ("1m", 60.1), ("-1", 1.1), ("soon", 1.1), ("", 1.1)],
)
def test_settle_follows_the_refresh_interval(interval: str, settle: float) -> None:
    assert settle_after(interval) == pytest.approx(settle)


# --- the running indexer ----------------------------------------------------------------------


@dataclass(frozen=True)
class Heard:
    at: float  # time.monotonic() on arrival
    announcement: Announcement

    def names(self, tags: Iterable[str]) -> bool:
        return not self.announcement.everything and set(tags) <= self.announcement.tags


@contextlib.asynccontextmanager
async def listening(redis_url: str, channel: str) -> AsyncIterator[list[Heard]]:
    """Every announcement published on ``channel`` while inside, in order of arrival."""
    client = aioredis.from_url(redis_url)
    pubsub = client.pubsub()
    heard: list[Heard] = []

    async def read() -> None:
        async for message in pubsub.listen():
            if message["type"] == "message":
                announcement = Announcement.decode(message["data"])
                assert announcement is not None, message
                heard.append(Heard(time.monotonic(), announcement))

    await pubsub.subscribe(channel)
    reader = asyncio.ensure_future(read())
    try:
        yield heard
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await pubsub.aclose()
        await client.aclose()


def naming(heard: list[Heard], tags: Iterable[str]) -> list[Heard]:
    return [h for h in heard if h.names(tags)]


@pytest.fixture
def settings(stack_urls: StackUrls, database_url: str, index_alias: str, redis_prefix: str) -> IndexerSettings:
    # Not the default 1s refresh: the repeat's delay must follow the configured interval.
    return indexer_settings(stack_urls, database_url, index_alias, redis_prefix, refresh_interval="2s")


async def test_changes_are_announced_with_their_tags_once_the_indexer_refreshed(
    settings: IndexerSettings, stack_urls: StackUrls, db: asyncpg.Connection
) -> None:
    settle = settle_after(settings.refresh_interval)
    seller = await add_seller(db, "Ollivanders")
    other = await add_seller(db, "Borgin and Burkes")
    kept = await add_product(db, seller, "Elder Wand")
    drafted = await add_product(db, seller, "Invisibility Cloak")
    gone = await add_product(db, other, "Resurrection Stone")
    async with listening(stack_urls.redis_url, generation_key(settings.redis_key_prefix)) as heard:
        # A full reindex announces everything, and again after the refresh; the stream then
        # starts where the reindex ended.
        await run_reindex(settings, asyncio.Event())
        await eventually(lambda: _at_least(heard, 2), what="reindex announced")
        assert [h.announcement.everything for h in heard] == [True, True]
        assert heard[1].at - heard[0].at >= settle - 0.05
        async with running_indexer(settings):
            changes_from = len(heard)

            await db.execute("UPDATE products SET price = 31.50 WHERE id = $1", kept)
            updated = {product_tag(kept), seller_tag(seller)}
            await eventually(lambda: _once(heard, updated), timeout=10, what="update announced")

            await db.execute("UPDATE products SET status = 'draft' WHERE id = $1", drafted)
            made_draft = {product_tag(drafted), seller_tag(seller)}
            await db.execute("DELETE FROM products WHERE id = $1", gone)
            deleted = {product_tag(gone), ANY_SELLER}
            await eventually(lambda: _once(heard, made_draft), timeout=10, what="draft announced")
            await eventually(lambda: _once(heard, deleted), timeout=10, what="delete announced")
            # A re-announcement would be here by now: the indexer's refresh worked, so none comes
            # (it would turn every cached page showing these products stale a second time).
            await asyncio.sleep(settle + 0.5)

    changes = heard[changes_from:]
    for tags in (updated, made_draft, deleted):
        assert len(naming(changes, tags)) == 1, (tags, changes)
    assert not any(h.announcement.everything for h in changes)
    generations = [h.announcement.generation for h in heard]
    assert generations == sorted(set(generations)), generations  # strictly increasing


async def test_a_start_up_build_announces_everything(settings: IndexerSettings, stack_urls: StackUrls) -> None:
    settings = replace(settings, refresh_interval="500ms")
    channel = generation_key(settings.redis_key_prefix)
    # No index yet: the indexer builds one first.
    async with listening(stack_urls.redis_url, channel) as heard, running_indexer(settings):
        await eventually(lambda: _at_least(heard, 1), timeout=10, what="build announced")
    assert heard[0].announcement.everything


@pytest.mark.parametrize("refresh_works", [True, False])
async def test_a_change_is_announced_again_after_settle_only_when_the_refresh_before_it_failed(
    refresh_works: bool, stack_urls: StackUrls, redis_prefix: str, engine: Any, index_alias: str
) -> None:
    """The safety net: when the refresh before an announcement fails (here a real engine error:
    the index is missing), only the periodic refresh makes the change searchable, so it is
    announced once more ``settle`` later; after a refresh that worked, once is enough."""
    if refresh_works:
        await engine.indices.create(index=index_alias)
    refreshed = index_alias if refresh_works else f"{index_alias}_missing"

    async def refresh() -> bool:
        return refreshed_everywhere((await engine.indices.refresh(index=refreshed)).body)

    client = aioredis.from_url(stack_urls.redis_url)
    settle = 0.3
    generation = Generation(client, redis_prefix, IndexerMetrics(), settle=settle, before_announcement=refresh)
    async with listening(stack_urls.redis_url, generation.key) as heard:
        task = asyncio.ensure_future(generation.run())
        try:
            generation.mark([product_tag(7)])
            await eventually(lambda: _once(heard, {product_tag(7)}), timeout=10, what="change announced")
            if refresh_works:
                await asyncio.sleep(settle + 1.0)  # a re-announcement would be here by now
            else:
                await eventually(lambda: _twice(heard, {product_tag(7)}), timeout=10, what="announced again")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await client.aclose()
    assert len(naming(heard, {product_tag(7)})) == (1 if refresh_works else 2), heard


async def _at_least(heard: list[Heard], count: int) -> bool:
    return len(heard) >= count


async def _once(heard: list[Heard], tags: set[str]) -> list[Heard]:
    return naming(heard, tags)


async def _twice(heard: list[Heard], tags: set[str]) -> list[Heard]:
    """The first two announcements naming ``tags``; empty (falsy) until there are two."""
    found = naming(heard, tags)
    return found[:2] if len(found) >= 2 else []


async def test_a_change_is_announced_only_once_it_is_searchable(
    settings: IndexerSettings, stack_urls: StackUrls, db: asyncpg.Connection, engine: Any
) -> None:
    """An index that never refreshes by itself: only the indexer's refresh before announcing
    can make the change searchable, so a proxy re-reading on the announcement sees the new price."""
    settings = replace(settings, refresh_interval="-1")
    seller = await add_seller(db, "Ollivanders")
    wand = await add_product(db, seller, "Elder Wand", price=30.0)
    await run_reindex(settings, asyncio.Event())
    channel = generation_key(settings.redis_key_prefix)
    async with listening(stack_urls.redis_url, channel) as heard, running_indexer(settings):
        await db.execute("UPDATE products SET price = 44.5 WHERE id = $1", wand)
        await eventually(lambda: _once(heard, {product_tag(wand)}), timeout=15, what="update announced")
        found = await engine.search(index=settings.search_index, query={"ids": {"values": [str(wand)]}})
        assert found["hits"]["hits"][0]["_source"]["price"] == 44.5
