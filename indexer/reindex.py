"""Full reindex with zero downtime: build a new versioned index, then swap the alias atomically.

Steps (``hos-search reindex``, ``SYNC_PRODUCTS_ON_STARTUP``, ``--reindex-on-start``):

1. Take the advisory lock for this alias (one reindex at a time) and register a checkpoint
   ``reindex:<alias>`` at the lowest existing one, so pruning keeps every outbox row this
   reindex may replay (see :func:`indexer.checkpoint.hold_checkpoint`). A row already there was
   left by a reindex that died after its swap, for the streamer to re-read from: until this
   reindex completes, the row never moves above where it was, and a failure leaves it.
2. Create ``<alias>_v<timestamp>`` with the catalog mapping, refresh off and no replicas.
3. In one REPEATABLE READ transaction (one snapshot S): note where the outbox stands in S (an
   :class:`~indexer.outbox.Horizon`: its highest visible seq and the xids that may be in
   progress), and stream every active product from a server-side cursor into bulk requests.
   Each document's external version is its highest outbox seq visible in S (see
   :mod:`indexer.batch` for why per-product), so later changes always carry a higher-or-equal
   version and are never refused.
4. Replay the outbox from S (an :class:`~indexer.outbox.OutboxCursor` that starts with S's
   in-progress transactions in flight) into the new index, up to where it stood when this
   replay began: every change visible in a snapshot taken then (see "How far a bounded reader
   must go" in :mod:`indexer.outbox`). Never "until a read finds nothing waiting": under
   writes faster than the replay that moment never came.
5. Live settings (refresh 1 s, replicas), refresh, then ``update_aliases`` with every remove
   and the add in one call: readers see the old index or the new one, never neither.
6. Replay again, up to a snapshot H taken after the swap. Why: a change committed before the
   swap may have been written by the streaming indexer to the *old* index only (the alias
   still pointed there). The streamer fetched it before the swap, so it is committed and
   visible in H, and this replay writes it to the new index. A change not visible in H
   commits after H, hence after the swap: the streamer reads and fetches it only then, and
   writes it through the alias, into the new index — it is the stream's, and the cursor's
   checkpoint stays below it. Both writers use external versions, so neither can replace
   newer data with older. Each replay's work is what was written during the phase before it,
   so a reindex ends whatever the write rate: with writes k times faster than a replay, the
   first replay takes about k times the load and the second about k² times.
7. Advance the streaming indexer's checkpoint (``INDEXER_NAME``) to this reindex's, if it is
   behind: every change at or below that is in the new, now live, index, and no transaction
   in flight can still add one there (the cursor's checkpoint stays below their floors, not
   at the horizon). Without this, the first ``hos-search indexer`` after ``migrate``, ``seed``
   and ``reindex`` re-read the whole outbox from seq 0 (a product inserted just after it
   started took more than 5 s to be searchable on a 12k catalog). Never moved backwards: a
   streamer running ahead keeps its place, and what it wrote to the old index is in H.
8. Delete the old indexes behind the alias, release the checkpoint and the lock.

Replays read ``INDEXER_BATCH_SIZE`` changes per batch, like the streamer. A failure or stop
before step 5 deletes the new index and leaves the live alias untouched; a process killed
outright leaves an orphan index that the next reindex deletes (safe: the lock says no other
reindex is loading it). One that fails after the swap leaves its ``reindex:<alias>`` row, from
which the streamer re-reads (:func:`indexer.checkpoint.adopt_abandoned_hold`). Never writes to the
alias before the swap, and never deletes an index that the alias points to before the swap has
succeeded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import asyncpg
from elasticsearch import AsyncElasticsearch

from catalog.connections import connect_postgres
from catalog.document import PRODUCT_ROWS_SQL, UnindexableRow, is_searchable, product_document
from catalog.mapping import index_mappings, index_settings, is_version_of, live_settings, versioned_index_name
from indexer import dead_letters
from indexer.batch import record_outcome, run_batch
from indexer.checkpoint import advance_checkpoint, hold_checkpoint, release_checkpoint
from indexer.errors import IndexerError
from indexer.listener import close_quietly
from indexer.metrics import IndexerMetrics
from indexer.outbox import OutboxCursor, read_horizon
from indexer.settings import IndexerSettings
from indexer.sink import Action, Sink, SinkResult

log = logging.getLogger("hos_search.indexer.reindex")

LOAD_CHUNK = 1_000  # documents per bulk request while loading
LOAD_IN_FLIGHT = 2  # bulk requests in flight: the next chunk is built while one is written


def reindex_lock_name(alias: str) -> str:
    """The advisory-lock name a reindex of ``alias`` holds while it runs."""
    return f"hos-search reindex {alias}"


def hold_name(alias: str) -> str:
    """The checkpoint row a reindex of ``alias`` registers so pruning keeps what it replays."""
    return f"reindex:{alias}"


class ReindexError(IndexerError):
    """The reindex cannot run or was abandoned; the live alias is untouched."""


class ReindexBusy(ReindexError):
    """Another reindex of the alias holds the lock; this one did nothing."""


@dataclass(frozen=True)
class ReindexResult:
    index: str
    documents: int
    replayed: int  # outbox changes applied after the snapshot
    checkpoint: int  # every outbox change at or below this seq is in the new index
    seconds: float
    removed: tuple[str, ...]  # old indexes deleted


# Per-product versions come from the outbox in the same snapshot as the rows.
_LOAD_SQL = f"""
SELECT r.*, coalesce(v.version, 0) AS version
  FROM ({PRODUCT_ROWS_SQL} WHERE p.status = 'active') r
  LEFT JOIN (SELECT product_id, max(seq) AS version FROM search_outbox GROUP BY product_id) v
         ON v.product_id = r.id
"""


async def alias_targets(engine: AsyncElasticsearch, alias: str) -> list[str]:
    """The indexes behind ``alias`` (empty when it does not exist).

    Raises :class:`ReindexError` when a concrete index is named like the alias: nothing can
    swap it, and writing to it would bypass every versioned index.
    """
    if await engine.indices.exists_alias(name=alias):
        return sorted((await engine.indices.get_alias(name=alias)).body)
    if await engine.indices.exists(index=alias):
        raise ReindexError(
            f"SEARCH_INDEX={alias!r} is a concrete index, not an alias; delete it (or choose another "
            "SEARCH_INDEX) so that a versioned index can be put behind the alias"
        )
    return []


async def _versioned_indexes(engine: AsyncElasticsearch, alias: str) -> list[str]:
    found = await engine.options(ignore_status=404).indices.get(index=f"{alias}_v*", allow_no_indices=True)
    if found.meta.status == 404:
        return []
    return [name for name in found.body if is_version_of(alias, name)]


async def _delete_indexes(engine: AsyncElasticsearch, names: list[str]) -> None:
    for name in names:
        await engine.options(ignore_status=404).indices.delete(index=name)


async def reindex(
    settings: IndexerSettings,
    engine: AsyncElasticsearch,
    sink: Sink,
    metrics: IndexerMetrics,
    stop: asyncio.Event,
) -> ReindexResult:
    """Rebuild ``settings.search_index`` from Postgres and swap it in; see the module docstring."""
    alias = settings.search_index
    started = time.perf_counter()
    conn = await connect_postgres(settings.database_url)
    hold = hold_name(alias)
    held = False  # the hold row is this reindex's to advance and release
    inherited: int | None = None
    new_index: str | None = None
    swapped = False
    completed = False
    try:
        if not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", reindex_lock_name(alias)):
            raise ReindexBusy(f"another reindex of {alias!r} is running")
        live = await alias_targets(engine, alias)
        orphans = [name for name in await _versioned_indexes(engine, alias) if name not in live]
        if orphans:
            log.warning("reindex: deleting %d orphan index(es) of an abandoned reindex: %s", len(orphans), orphans)
            await _delete_indexes(engine, orphans)
        # With the lock held, a hold row found here was left by a reindex that died after its
        # swap: the streamer must still re-read from it. Until this reindex completes, the row
        # never moves above that, and a failure leaves it in place.
        inherited = await conn.fetchval("SELECT last_seq FROM search_indexer_checkpoint WHERE name = $1", hold)
        floor = await hold_checkpoint(conn, hold)
        held = True
        new_index = versioned_index_name(alias)
        await engine.indices.create(
            index=new_index,
            settings=index_settings(loading=True, shards=settings.index_shards, replicas=settings.index_replicas),
            mappings=index_mappings(),
        )
        log.info("reindex: loading %s (alias %s, currently on %s)", new_index, alias, live or "nothing")
        cursor, documents = await _load(conn, sink, new_index, stop, metrics, floor)
        log.info("reindex: loaded %d documents; replaying the changes made since the snapshot", documents)
        limit = settings.batch_size
        cursor, replayed = await _replay(
            conn, cursor, sink, new_index, stop, metrics, hold, limit=limit, ceiling=inherited
        )
        await engine.indices.put_settings(
            index=new_index,
            settings=live_settings(replicas=settings.index_replicas, refresh_interval=settings.refresh_interval),
        )
        await engine.indices.refresh(index=new_index)
        live = await alias_targets(engine, alias)
        actions: list[dict[str, dict[str, str]]] = [{"remove": {"index": name, "alias": alias}} for name in live]
        actions.append({"add": {"index": new_index, "alias": alias}})
        await engine.indices.update_aliases(actions=actions)
        swapped = True
        log.info("reindex: alias %s now on %s (was %s)", alias, new_index, live or "nothing")
        cursor, after_swap = await _replay(
            conn, cursor, sink, new_index, stop, metrics, hold, limit=limit, ceiling=inherited, must_finish=True
        )
        # Step 7: the stream may begin where this reindex ended.
        await advance_checkpoint(conn, settings.name, cursor.checkpoint)
        await _delete_indexes(engine, live)
        seconds = time.perf_counter() - started
        metrics.reindex_duration.set(seconds)
        log.info(
            "reindex: done in %.1fs: %d documents, %d changes replayed, old index(es) deleted: %s",
            seconds,
            documents,
            replayed + after_swap,
            live or "none",
        )
        completed = True
        return ReindexResult(new_index, documents, replayed + after_swap, cursor.checkpoint, seconds, tuple(live))
    except BaseException:
        if new_index is not None and not swapped:
            log.warning("reindex: abandoned; deleting %s, alias %s untouched", new_index, alias)
            try:
                await asyncio.shield(_delete_indexes(engine, [new_index]))
            except Exception as exc:
                log.warning("reindex: could not delete %s (the next reindex will): %s", new_index, exc)
        raise
    finally:
        if not held:
            pass  # without the lock, the hold row (if any) is the running reindex's: never release it
        elif swapped and not completed:
            # Changes the streamer wrote to the old index just before the swap may be missing
            # from the new one: the hold row tells the streamer where to replay from
            # (indexer.service recovers an abandoned reindex).
            log.warning("reindex: failed after the swap; leaving %s for the streamer to replay from", hold)
        elif not completed and inherited is not None:
            log.warning("reindex: failed; leaving %s of an earlier reindex for the streamer to replay from", hold)
        else:
            try:
                await asyncio.wait_for(release_checkpoint(conn, hold), 5.0)
            except Exception as exc:
                log.warning("reindex: could not release checkpoint %s: %s", hold, exc)
        await close_quietly(conn)  # also releases the advisory lock


async def _load(
    conn: asyncpg.Connection, sink: Sink, index: str, stop: asyncio.Event, metrics: IndexerMetrics, floor: int
) -> tuple[OutboxCursor, int]:
    """Bulk-load every active product from one snapshot; the cursor continues after it.

    ``floor`` is a checkpoint taken before the snapshot: no transaction in progress in the
    snapshot can hold an outbox seq at or below it.
    """
    documents = 0
    in_flight: set[asyncio.Future[None]] = set()
    aside: list[tuple[int, str]] = []  # rows no document could be made of
    refused = SinkResult()  # documents the engine refused for their own fault

    async def write(chunk: list[Action]) -> None:
        written = await sink.write(index, chunk, stop)
        if written is None:
            raise ReindexError("stopped while loading")
        refused.rejections.extend(written.rejections)

    async def settle(until: int) -> None:
        nonlocal in_flight
        while len(in_flight) > until:
            done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a failed write fails the load

    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            # The first statement fixes the transaction's snapshot: the horizon, the rows and
            # the versions below all belong to it.
            horizon = await read_horizon(conn)
            chunk: list[Action] = []
            async for row in conn.cursor(_LOAD_SQL, prefetch=LOAD_CHUNK):
                if not is_searchable(row):
                    continue
                try:
                    chunk.append(Action(row["id"], row["version"], product_document(row)))
                except UnindexableRow as exc:
                    aside.append((row["id"], exc.reason))  # one row never stops a rebuild
                    continue
                if len(chunk) >= LOAD_CHUNK:
                    documents += len(chunk)
                    in_flight.add(asyncio.ensure_future(write(chunk)))
                    chunk = []
                    await settle(LOAD_IN_FLIGHT - 1)
                    if stop.is_set():
                        raise ReindexError("stopped while loading")
            if chunk:
                documents += len(chunk)
                in_flight.add(asyncio.ensure_future(write(chunk)))
        await settle(0)
    finally:
        for task in in_flight:
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)
    await dead_letters.set_aside(conn, aside, metrics, "document")
    await record_outcome(conn, (), refused, metrics)
    metrics.reindex_documents.inc(documents)
    cursor = OutboxCursor.after_snapshot(floor=floor, max_visible=horizon.max_visible, running=horizon.running)
    return cursor, documents


async def _replay(
    conn: asyncpg.Connection,
    cursor: OutboxCursor,
    sink: Sink,
    index: str,
    stop: asyncio.Event,
    metrics: IndexerMetrics,
    hold: str,
    *,
    limit: int,
    ceiling: int | None = None,
    must_finish: bool = False,
) -> tuple[OutboxCursor, int]:
    """Apply outbox changes into ``index`` up to where the outbox stands as this call begins.

    The target is taken once (steps 4 and 6), never chased: looping "until a read finds
    nothing waiting" never ended while writes outpaced the replay (200 updates/s on 10k
    products: still replaying after 600 s). What commits later is the stream's. The hold row
    follows the cursor's checkpoint, up to ``ceiling`` (an abandoned reindex's row) if any.
    """
    horizon = await read_horizon(conn)
    log.info("reindex: replaying up to seq %d (from %d)", horizon.max_visible, cursor.read_to)
    replayed = 0
    # After the swap, stopping halfway would lose changes the streamer wrote to the old index;
    # the replay is bounded, so finishing it is too.
    never = asyncio.Event()
    while not cursor.covers(horizon):
        if stop.is_set() and not must_finish:
            raise ReindexError("stopped while replaying changes")
        outcome = await run_batch(conn, cursor, sink, index, never if must_finish else stop, metrics, limit=limit)
        if outcome is None:
            raise ReindexError("stopped while replaying changes")
        replayed += len(outcome.window.changes)
        if outcome.cursor.checkpoint != cursor.checkpoint:
            position = outcome.cursor.checkpoint if ceiling is None else min(ceiling, outcome.cursor.checkpoint)
            await advance_checkpoint(conn, hold, position)  # lets pruning proceed
        cursor = outcome.cursor
    return cursor, replayed
