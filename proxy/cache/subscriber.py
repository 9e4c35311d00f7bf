"""Following the catalog generation in one worker: a pub/sub listener plus a watchdog.

The **listener** keeps a subscription (a connection of its own, no read timeout) to the
generation channel and the fill-notice channel: announcements go to the worker's
:class:`CatalogView`, fill notices to :class:`FillNotices`. It reconnects when the connection
fails, pausing as :data:`catalog.retry.SUBSCRIBE` says (0.1 s doubling to 2 s). It is a plain
connection to one node even on a Redis Cluster (a classic PUBLISH reaches every node there);
each reconnection takes the next node that ``urls`` names, so a dead node is left behind.

The **watchdog** reads the generation key through the request-path client (bounded by its
short timeout) every ``poll_interval`` while the subscription is down and every
``check_interval`` while it is up. A failed read means the announcements may be missed: the
view goes blind (``CatalogView.lose``) and the cache judges entries by age within the hard
bound. A successful read while not subscribed, or right after a subscription (re)starts, or
one that sees the counter ahead of the view twice in a row (a lost message) re-syncs the view
(``CatalogView.follow``: a counter that moved unseen counts as "everything changed").

So a request never waits on Redis to learn the generation: it reads it from memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis

from catalog.cache_generation import Announcement, generation_key
from catalog.redis_client import REDIS_ERRORS, RedisClient
from catalog.retry import SUBSCRIBE
from proxy.cache.freshness import CatalogView
from proxy.cache.keys import fills_channel
from proxy.cache.notices import FillNotices
from proxy.tasks import cancel_and_wait

log = logging.getLogger("hos_search.proxy.cache")


class Subscriber:
    def __init__(
        self,
        urls: Callable[[], list[str]],
        prefix: str,
        view: CatalogView,
        notices: FillNotices,
        commands: RedisClient,
        *,
        poll_interval: float = 0.25,
        check_interval: float = 1.0,
        timeout: float = 0.5,
        on_state: Callable[[bool, int], None] = lambda subscribed, generation: None,
    ) -> None:
        self._urls = urls
        self._key = generation_key(prefix)
        self._fills = fills_channel(prefix)
        self._view = view
        self._notices = notices
        self._commands = commands
        self._poll_interval = poll_interval
        self._check_interval = check_interval
        # The commands' client has no socket timeout (proxy.app): each read is bounded here.
        self._timeout = timeout
        self._on_state = on_state
        self.subscribed = False
        self._resync = asyncio.Event()

    async def run(self) -> None:
        """Listen and watch until cancelled."""
        watchdog = asyncio.ensure_future(self._watch())
        try:
            await self._listen()
        finally:
            await cancel_and_wait(watchdog)

    async def _listen(self) -> None:
        failures = 0  # in a row
        while True:
            urls = self._urls()
            client = aioredis.from_url(urls[failures % len(urls)], socket_connect_timeout=0.5)
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._key, self._fills)
                    self.subscribed, failures = True, 0
                    self._resync.set()  # the watchdog re-reads the counter now
                    log.info("cache: following the catalog generation on %s", self._key)
                    while True:
                        message = await pubsub.get_message(timeout=self._check_interval)
                        if message is not None and message.get("type") == "message":
                            self._dispatch(message["channel"], message["data"])
            except REDIS_ERRORS as exc:
                if self.subscribed:
                    log.warning("cache: generation subscription lost (%s); reconnecting", type(exc).__name__)
                self.subscribed = False
                self._view.lose(time.time())
                self._report()
            finally:
                self.subscribed = False
                await client.aclose()
            failures += 1
            await asyncio.sleep(SUBSCRIBE.delay(failures))

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        if channel == self._fills.encode():
            self._notices.deliver(data.decode("ascii", "replace"))
            return
        announcement = Announcement.decode(data)
        if announcement is None:
            log.warning("cache: unreadable generation announcement ignored: %r", data[:100])
            return
        self._view.announce(announcement, time.time())
        self._report()

    async def _watch(self) -> None:
        # A value the counter had at the last check that the view had not reached yet: if the
        # view has still not reached it a whole interval later, its announcement was lost.
        awaited: int | None = None
        while True:
            interval = self._check_interval if self.subscribed and self._view.following else self._poll_interval
            try:
                await asyncio.wait_for(self._resync.wait(), interval)
            except TimeoutError:
                pass
            resync = self._resync.is_set()
            self._resync.clear()
            try:
                async with asyncio.timeout(self._timeout):
                    raw = await self._commands.get(self._key)
                generation = int(raw or 0)
            except (*REDIS_ERRORS, ValueError, TimeoutError):
                self._view.lose(time.time())
                self._report()
                continue
            view = self._view
            lost_message = awaited is not None and view.generation < awaited
            if resync or lost_message or not self.subscribed or not view.following:
                view.follow(generation, time.time())
                self._report()
            awaited = generation if generation > view.generation else None

    def _report(self) -> None:
        self._on_state(self.subscribed and self._view.following, self._view.generation)
