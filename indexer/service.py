"""The streaming indexer: every lifetime in one ``async with``, and the loop that keeps the
index equal to the active products.

One indexer per name and alias streams: on start and after every reconnect it first holds the
election lock (:mod:`indexer.election`), standing by while another process holds it. Only
the holder rebuilds at start, reads, writes, checkpoints and prunes. When the lock is lost the
stream is cancelled at once — the bulk request in flight abandoned, no later one started (each
is fenced by :meth:`~indexer.election.Lease.holds`) — and the indexer stands for election
again. A write abandoned that way may still land after the successor's, with data fetched
earlier at an equal version (a late commit of a lower seq; see :mod:`indexer.batch`), so an
indexer that takes the lock after waiting for it (or after losing it) re-reads once from the
checkpoint it took over at, ``INDEXER_BULK_TIMEOUT_S`` later, and keeps its stored checkpoint
at that point until then.

Once elected: LISTEN first, then read the outbox from the stored checkpoint — so nothing
committed while the indexer was away (or while it reconnected) is missed. Then: wait for the
doorbell (or the keepalive tick), linger a few tens of milliseconds so a burst arrives as one
batch, run a batch (:func:`indexer.batch.run_batch`), store the advanced checkpoint, mark the
catalog generation with the tags of what the batch changed (all of it after a start-up
reindex; :mod:`indexer.generation` announces them), prune now and then — and then also adopt
the hold row of a reindex that died after its swap, re-reading from it.

A reindex that completes moves the stored checkpoint forward to where it ended (never back),
possibly past this stream's own position: the stream just goes on from where it is, and what
it re-reads is written again with the same versions.

Failures: a lost Postgres connection (terminated backend, server gone, keepalive unanswered)
closes every connection (the lock's too) and reconnects with capped, jittered backoff, forever — the
checkpoint in Postgres says where to resume. An engine that is down or refusing keeps the
current batch in the sink's retry loop; nothing is read ahead, so the backlog waits in the
outbox table, not in memory. On stop (SIGTERM) the current batch is finished if its writes
land, else abandoned with the checkpoint where it was.

Never imports the proxy; never reads ``os.environ``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import AsyncExitStack
from typing import Any

import asyncpg
from elastic_transport import ConnectionError as TransportConnectionError
from elastic_transport import ConnectionTimeout
from elasticsearch import AsyncElasticsearch

from catalog.config import ConfigError, redact_url
from catalog.connections import ServerUnreachable, connect_postgres
from catalog.engine import create_engine_client
from catalog.mapping import live_settings
from catalog.redis_client import RedisClient, open_redis
from catalog.retry import AT_START, RECONNECT
from indexer.batch import run_batch
from indexer.checkpoint import adopt_abandoned_hold, advance_checkpoint, expire_checkpoints, read_checkpoint
from indexer.election import STANDBY_POLL_S, Lease, LockLost, elect
from indexer.generation import Generation, settle_after
from indexer.listener import Listener, ListenerLost, close_quietly
from indexer.metrics import IndexerMetrics, serve_metrics
from indexer.outbox import OutboxCursor, prune
from indexer.reindex import (
    ReindexBusy,
    ReindexError,
    ReindexResult,
    alias_targets,
    hold_name,
    reindex,
    reindex_lock_name,
)
from indexer.settings import IndexerSettings
from indexer.sink import Sink, wait_or_stop

log = logging.getLogger("hos_search.indexer")

# What "the Postgres connection is gone" looks like; anything else is a bug and propagates.
POSTGRES_LOST = (
    OSError,
    TimeoutError,
    ListenerLost,
    LockLost,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,  # admin shutdown (pg_terminate_backend), crash shutdown
    asyncpg.CannotConnectNowError,
    # A connection whose backend was terminated mid-operation can be left in a state where
    # the next query fails with "cannot switch to state …; another operation is in progress"
    # instead of a connection error (found by tests/test_indexer_chaos.py): reconnect.
    asyncpg.InternalClientError,
)
# What "the engine is gone" looks like outside the sink (which retries its own requests).
ENGINE_LOST = (TransportConnectionError, ConnectionTimeout)
_QUERY_TIMEOUT_S = 30.0
_PRUNE_BATCH = 10_000


async def open_engine(settings: IndexerSettings, *, attempts: int = 5) -> AsyncElasticsearch:
    """The engine client, retried with backoff at start; :class:`ServerUnreachable` when out of tries."""
    for attempt in range(1, attempts + 1):
        try:
            client, _info = await create_engine_client(
                settings.elasticsearch_node,
                access=settings.engine_access,
                pool_size=8,
                request_timeout=settings.bulk_timeout_s,
            )
            return client
        except (TransportConnectionError, ConnectionTimeout) as exc:
            if attempt == attempts:
                raise ServerUnreachable(
                    f"ELASTICSEARCH_NODE: cannot reach {redact_url(settings.elasticsearch_node)} after {attempts} tries"
                ) from exc
            delay = AT_START.delay(attempt)
            log.warning("engine unreachable (%s); retrying in %.1fs, %d tries left", exc, delay, attempts - attempt)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def run_indexer(
    settings: IndexerSettings,
    stop: asyncio.Event,
    *,
    reindex_on_start: bool = False,
    metrics: IndexerMetrics | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Run the streaming indexer until ``stop`` is set. ``ready`` is set once it is streaming
    (a standby's, once it has taken over)."""
    metrics = metrics or IndexerMetrics()
    async with AsyncExitStack() as stack:
        if settings.metrics_port:
            try:
                server = serve_metrics(metrics, settings.metrics_port, settings.metrics_host)
            except OSError as exc:
                raise ConfigError(
                    f"INDEXER_METRICS_PORT={settings.metrics_port}: cannot listen on "
                    f"{settings.metrics_host}: {exc.strerror}"
                ) from None
            stack.callback(server.shutdown)
        engine = await open_engine(settings)
        stack.push_async_callback(engine.close)
        redis = _open_redis(settings)
        stack.push_async_callback(redis.aclose)
        # Re-announce changes once the live index has refreshed (see indexer.generation).
        settle = settle_after(settings.refresh_interval)

        async def refresh_live_index() -> bool:
            """Refresh the live index; whether every shard copy did (then no re-announcement)."""
            answer = await asyncio.wait_for(
                engine.indices.refresh(index=settings.search_index), settings.bulk_timeout_s
            )
            return refreshed_everywhere(answer.body)

        generation = Generation(
            redis, settings.redis_key_prefix, metrics, settle=settle, before_announcement=refresh_live_index
        )
        await stack.enter_async_context(_background(generation.run()))
        sink = Sink(engine, metrics, timeout=settings.bulk_timeout_s)
        streamer = Streamer(settings, engine, sink, generation, metrics)
        await streamer.run(stop, reindex_on_start=reindex_on_start or settings.sync_on_startup, ready=ready)


def refreshed_everywhere(answer: object) -> bool:
    """Whether a refresh answer (``{"_shards": {"total", "successful", "failed"}}``) says no shard
    copy failed. An unassigned replica counts in ``total`` but not in ``failed``: it serves no
    search, so it cannot show an old answer."""
    shards = answer.get("_shards") if isinstance(answer, dict) else None
    return isinstance(shards, dict) and shards.get("failed") == 0 and bool(shards.get("successful"))


def _open_redis(settings: IndexerSettings) -> RedisClient:
    """The indexer's one Redis client (one server or a cluster: ``catalog.redis_client``)."""
    return open_redis(
        settings.redis_url,
        cluster=settings.redis_cluster,
        max_connections=8,
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
    )


async def run_reindex(
    settings: IndexerSettings, stop: asyncio.Event, metrics: IndexerMetrics | None = None
) -> ReindexResult:
    """A one-shot full reindex (``hos-search reindex``), then generation bumps announcing everything:
    one at once, and one once the live index has refreshed (unless ``stop`` is set meanwhile)."""
    metrics = metrics or IndexerMetrics()
    async with AsyncExitStack() as stack:
        engine = await open_engine(settings)
        stack.push_async_callback(engine.close)
        redis = _open_redis(settings)
        stack.push_async_callback(redis.aclose)
        sink = Sink(engine, metrics, timeout=settings.bulk_timeout_s)
        result = await reindex(settings, engine, sink, metrics, stop)
        generation = Generation(redis, settings.redis_key_prefix, metrics)
        await generation.bump(None)
        # What the reindex replayed after its swap becomes searchable only at the next refresh;
        # a proxy that re-read in between is told again, as indexer.generation does for a stream.
        if not await wait_or_stop(stop, settle_after(settings.refresh_interval)):
            await generation.bump(None)
        return result


async def _set_on_either(a: asyncio.Event, b: asyncio.Event, either: asyncio.Event) -> None:
    waits = {asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())}
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        either.set()
    finally:
        for task in waits:
            task.cancel()


@contextlib.asynccontextmanager
async def _background(coro: Coroutine[Any, Any, None]) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.ensure_future(coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Streamer:
    def __init__(
        self,
        settings: IndexerSettings,
        engine: AsyncElasticsearch,
        sink: Sink,
        generation: Generation,
        metrics: IndexerMetrics,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._sink = sink
        self._generation = generation
        self._metrics = metrics
        self._prepared = False
        self._last_prune = 0.0
        self._failures = 0  # consecutive reconnects; reset by a successful batch
        self._held_before = False  # whether this process has held the election lock before

    async def run(self, stop: asyncio.Event, *, reindex_on_start: bool, ready: asyncio.Event | None) -> None:
        initial = True
        while not stop.is_set():
            try:
                await self._session(stop, initial=initial, reindex_on_start=reindex_on_start, ready=ready)
                return
            except ENGINE_LOST as exc:
                # The engine went away while this indexer prepared its index (the alias check,
                # the refresh setting) after taking the lock: it died of it, where it should wait
                # like the stream does (found by tests/test_indexer_chaos.py: a cut engine during
                # a takeover). The lock is released meanwhile, so a standby may take over.
                initial = False
                self._failures += 1
                delay = RECONNECT.delay(self._failures)
                self._metrics.errors.labels(kind="engine_unreachable").inc()
                log.warning("engine unreachable while preparing the index (%s); retrying in %.2fs", exc, delay)
                if await wait_or_stop(stop, delay):
                    return
            except POSTGRES_LOST as exc:
                initial = False
                self._failures += 1
                attempt = self._failures
                delay = RECONNECT.delay(attempt)
                self._metrics.reconnects.labels(server="postgres").inc()
                if isinstance(exc, LockLost):  # counted by the lease when it was lost
                    # A standby waiting for the lock gets the first chance: terminating the lock
                    # session of the active indexer is a way to move it elsewhere.
                    delay = max(delay, 2 * STANDBY_POLL_S)
                    log.warning(
                        "indexer %s: lost the election lock (%s); standing for election again in %.2fs",
                        self._settings.name,
                        exc,
                        delay,
                    )
                else:
                    self._metrics.errors.labels(kind="postgres").inc()
                    log.warning(
                        "postgres connection lost (%r); reconnecting in %.2fs (attempt %d, retries until it answers)",
                        exc,
                        delay,
                        attempt,
                    )
                if await wait_or_stop(stop, delay):
                    return

    async def _connect_lock(self, initial: bool) -> asyncpg.Connection:
        if initial:  # a bounded budget at start: a wrong URL fails fast with one clear line
            return await connect_postgres(self._settings.database_url)
        return await asyncpg.connect(self._settings.database_url, timeout=5.0)

    async def _connect_listener(self) -> asyncpg.Connection:
        return await asyncpg.connect(self._settings.database_url, timeout=5.0)

    async def _connect_reader(self) -> asyncpg.Connection:
        # command_timeout: a stopped server must not hang a query forever.
        # synchronous_commit off: each outbox read takes an xid (indexer.outbox), and flushing
        # its commit record would cost a WAL fsync per read for nothing — a lost checkpoint
        # update after a server crash only means re-reading changes already indexed.
        return await asyncpg.connect(
            self._settings.database_url,
            timeout=5.0,
            command_timeout=_QUERY_TIMEOUT_S,
            server_settings={"synchronous_commit": "off"},
        )

    async def _session(
        self, stop: asyncio.Event, *, initial: bool, reindex_on_start: bool, ready: asyncio.Event | None
    ) -> None:
        settings = self._settings
        lease = await elect(
            lambda: self._connect_lock(initial),
            name=settings.name,
            alias=settings.search_index,
            lease_s=settings.lease_s,
            stop=stop,
            metrics=self._metrics,
        )
        if lease is None:
            return  # stopped while standing by
        # Another indexer may have been active until now, or this one lost the lock: re-read once.
        takeover = lease.waited_s > 0 or self._held_before
        self._held_before = True
        # Stopping, or the lock lost: no write starts after this is set.
        halt = asyncio.Event()
        try:
            async with _background(_set_on_either(stop, lease.lost, halt)):
                await self._lead(lease, stop, halt, reindex_on_start=reindex_on_start, ready=ready, takeover=takeover)
        finally:
            self._metrics.mark_inactive()
            await lease.release()

    async def _lead(
        self,
        lease: Lease,
        stop: asyncio.Event,
        halt: asyncio.Event,
        *,
        reindex_on_start: bool,
        ready: asyncio.Event | None,
        takeover: bool,
    ) -> None:
        """Stream while holding ``lease``; :class:`LockLost` as soon as it is lost."""
        # LISTEN before the first read: a change committed after the read rings this doorbell.
        listener = await Listener.open(self._connect_listener)
        try:
            conn = await self._connect_reader()
            try:
                if not self._prepared:
                    # A standby taking over does not rebuild: the index was kept by the one before.
                    rebuild = reindex_on_start and lease.waited_s == 0
                    if reindex_on_start and not rebuild:
                        log.info(
                            "indexer %s: took over from an active indexer; no start-up reindex", self._settings.name
                        )
                    self._prepared = await self._prepare(halt, rebuild)
                if lease.lost.is_set():
                    raise LockLost(lease.reason)
                if stop.is_set():
                    return
                if ready is not None:
                    ready.set()
                # Cancelled the moment the lock is lost: the read, fetch or bulk request in
                # flight is abandoned, and nothing is checkpointed past it.
                stream = asyncio.ensure_future(self._stream(listener, conn, stop, lease, takeover=takeover))
                lost = asyncio.ensure_future(lease.lost.wait())
                try:
                    await asyncio.wait({stream, lost}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    lost.cancel()
                    if not stream.done():
                        stream.cancel()
                    await asyncio.gather(stream, return_exceptions=True)
                if lease.lost.is_set():
                    raise LockLost(lease.reason)
                stream.result()
            finally:
                await close_quietly(conn)
        finally:
            await listener.close()

    async def _prepare(self, halt: asyncio.Event, reindex_on_start: bool) -> bool:
        """Reindex when asked to, or when there is no index yet; else set the live refresh interval.

        Returns whether it is done (``False``: ``halt`` was set first, try again next time)."""
        alias = self._settings.search_index
        live = await alias_targets(self._engine, alias)
        if not reindex_on_start and live:
            # SEARCH_INDEX_REFRESH_INTERVAL and SEARCH_INDEX_REPLICAS take effect at a restart, not
            # only at the next rebuild (shards cannot change on a live index: a reindex does that).
            await self._engine.indices.put_settings(
                index=",".join(live),
                settings=live_settings(
                    replicas=self._settings.index_replicas, refresh_interval=self._settings.refresh_interval
                ),
            )
            return True
        if not reindex_on_start:
            log.info("alias %s does not exist; building the index first", alias)
        waiting = False
        while True:
            try:
                # Stopped by ``halt``, not cancelled: a reindex must not be interrupted between
                # its alias swap and the moment it knows the swap happened.
                await reindex(self._settings, self._engine, self._sink, self._metrics, halt)
                break
            except ReindexBusy:
                # Someone else is rebuilding (`hos-search reindex`, another indexer starting):
                # stream through the alias once it exists, rather than exit — an indexer
                # restarted before the first index was there died of this (found by
                # tests/test_indexer_chaos.py).
                if await alias_targets(self._engine, alias):
                    log.info("another reindex of %s is running; streaming into the current index", alias)
                    return True
                if not waiting:
                    waiting = True
                    log.info("another reindex of %s is running and there is no index yet; waiting for it", alias)
                if await wait_or_stop(halt, 0.5):
                    return False
            except ReindexError:
                if halt.is_set():  # stopped (or deposed) during the start-up reindex: not a failure
                    return False
                raise
        # The reindex advanced this stream's checkpoint to where it ended (its step 7): the
        # stream does not re-read what the reindex loaded. Any product may have changed.
        self._generation.mark(None)
        return True

    async def _stream(
        self, listener: Listener, conn: asyncpg.Connection, stop: asyncio.Event, lease: Lease, *, takeover: bool
    ) -> None:
        settings = self._settings
        name = settings.name
        stored = await read_checkpoint(conn, name)  # creates the row, so an adopted hold can lower it
        rewound = await self._adopt_abandoned_reindex(conn)
        cursor = OutboxCursor.at_checkpoint(stored if rewound is None else min(stored, rewound))
        # After a takeover: where to re-read from, and when (see the module docstring).
        reread: tuple[int, float] | None = None
        if takeover:
            reread = (cursor.checkpoint, time.monotonic() + settings.bulk_timeout_s)
        backlog = await conn.fetchval("SELECT count(*) FROM search_outbox WHERE seq > $1", cursor.checkpoint)
        self._metrics.checkpoint.set(cursor.checkpoint)
        log.info(
            "indexer %s: catching up from checkpoint %d (%d outbox rows after it)", name, cursor.checkpoint, backlog
        )
        catching_up = True
        while not stop.is_set():
            listener.doorbell.clear()
            outcome = await run_batch(
                conn,
                cursor,
                self._sink,
                settings.search_index,
                stop,
                self._metrics,
                limit=settings.batch_size,
                alias=True,
                fence=lease.holds,
            )
            if outcome is None:
                if not stop.is_set():  # fenced: the lock was not confirmed recently enough
                    lease.lose("the lock was not confirmed within half the lease")
                    raise LockLost(lease.reason)
                log.info("indexer %s: stopped with a batch unwritten; checkpoint stays at %d", name, cursor.checkpoint)
                return
            self._failures = 0
            if outcome.result.changed_index:
                self._generation.mark(outcome.result.tags)
            # Until the re-read after a takeover, the stored checkpoint stays where it took over,
            # so that neither a restart nor pruning can skip what the re-read must cover.
            if reread is None and outcome.cursor.checkpoint != cursor.checkpoint:
                await advance_checkpoint(conn, name, outcome.cursor.checkpoint)
                self._metrics.checkpoint.set(outcome.cursor.checkpoint)
            cursor = outcome.cursor
            if reread is not None and time.monotonic() >= reread[1]:
                log.info(
                    "indexer %s: re-reading once from seq %d, where it took over: a write abandoned by the "
                    "indexer before it may have landed late",
                    name,
                    reread[0],
                )
                cursor = OutboxCursor.at_checkpoint(min(reread[0], cursor.checkpoint))
                reread = None
                continue
            if await self._maybe_prune(conn):
                # Now and then: a reindex that died after its swap leaves changes to replay.
                rewound = await self._adopt_abandoned_reindex(conn)
                if rewound is not None:
                    # Re-read from below both: this stream may have written rows above the
                    # hold to the old index before the swap, even when its own checkpoint is
                    # lower than the hold (held back by a transaction in flight) — rewinding
                    # only when the hold was lower skipped those rows in the new index.
                    cursor = OutboxCursor.at_checkpoint(min(rewound, cursor.checkpoint))
            if outcome.window.more_waiting:
                continue  # a backlog: read on without waiting for the doorbell
            if catching_up:
                catching_up = False
                log.info("indexer %s: caught up at checkpoint %d", name, cursor.checkpoint)
            if await listener.wait(stop, settings.keepalive_s):
                await wait_or_stop(stop, settings.linger)  # let the rest of a burst arrive
            else:
                await listener.check(timeout=min(settings.keepalive_s, 5.0))

    async def _adopt_abandoned_reindex(self, conn: asyncpg.Connection) -> int | None:
        alias = self._settings.search_index
        rewound = await adopt_abandoned_hold(conn, self._settings.name, hold_name(alias), reindex_lock_name(alias))
        if rewound is not None:
            log.warning("an abandoned reindex of %s left changes to replay; re-reading from seq %d", alias, rewound)
        return rewound

    async def _maybe_prune(self, conn: asyncpg.Connection) -> bool:
        """Prune now and then; whether it was time to."""
        now = time.monotonic()
        if now - self._last_prune < self._settings.prune_interval_s:
            return False
        self._last_prune = now
        for stale, last_seq in await expire_checkpoints(conn, self._settings.name, self._settings.checkpoint_expiry_s):
            self._metrics.checkpoints_expired.inc()
            log.warning(
                f"forgot the checkpoint of indexer {stale!r} (at seq {last_seq}): not seen for over "
                f"{self._settings.checkpoint_expiry_s:g} s, it held outbox pruning back; if that "
                "indexer comes back, it must reindex"
            )
        deleted = await prune(conn, batch=_PRUNE_BATCH)
        if deleted:
            self._metrics.pruned.inc(deleted)
            log.info("pruned %d outbox rows behind the checkpoint", deleted)
        return True
