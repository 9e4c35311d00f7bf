"""Full reindex with zero downtime: build a new versioned index, then swap the alias atomically.

Steps (``hos-search reindex``, ``SYNC_PRODUCTS_ON_STARTUP``, ``--reindex-on-start``):

1. Take the advisory lock for this alias (one reindex at a time) and register a checkpoint
   ``reindex:<alias>`` at the lowest existing one, so pruning keeps every outbox row this
   reindex may replay (see :func:`indexer.outbox.hold_checkpoint`).
2. Create ``<alias>_v<timestamp>`` with the catalog mapping, refresh off and no replicas.
3. In one REPEATABLE READ transaction (one snapshot S): note the xids that may be in progress
   at S (:func:`indexer.outbox.running_at`) and the
   highest visible outbox seq, and stream every active product from a server-side cursor into
   bulk requests. Each document's external version is its highest outbox seq visible in S (see
   :mod:`indexer.batch` for why per-product), so later changes always carry a higher-or-equal
   version and are never refused.
4. Replay the outbox from S (an :class:`~indexer.outbox.OutboxCursor` that starts with S's
   in-progress transactions in flight) into the new index until caught up.
5. Live settings (refresh 1 s, replicas), refresh, then ``update_aliases`` with every remove
   and the add in one call: readers see the old index or the new one, never neither.
6. Replay again until caught up. Why: a change committed between step 4's last read and the
   swap was written by the streaming indexer to the *old* index (the alias still pointed
   there). Every change committed before the swap is visible to this replay's snapshot, so it
   lands in the new index; every change committed after the swap is fetched and written by
   the streamer after the swap, through the alias, so it lands there too. Both writers use
   external versions, so neither can replace newer data with older.
7. Delete the old indexes behind the alias, release the checkpoint and the lock.

A failure or stop before step 5 deletes the new index and leaves the live alias untouched; a
process killed outright leaves an orphan index that the next reindex deletes (safe: the lock
says no other reindex is loading it). Never writes to the alias before the swap, and never
deletes an index that the alias points to before the swap has succeeded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import asyncpg
from elasticsearch import AsyncElasticsearch

from catalog.connections import connect_postgres
from catalog.document import PRODUCT_ROWS_SQL, is_searchable, product_document
from catalog.mapping import index_mappings, index_settings, is_version_of, live_settings, versioned_index_name
from indexer.batch import run_batch
from indexer.listener import close_quietly
from indexer.metrics import IndexerMetrics
from indexer.outbox import OutboxCursor, advance_checkpoint, hold_checkpoint, release_checkpoint, running_at
from indexer.settings import IndexerSettings
from indexer.sink import Action, Sink

log = logging.getLogger("hos_search.indexer.reindex")

LOAD_CHUNK = 1_000  # documents per bulk request while loading
LOAD_IN_FLIGHT = 2  # bulk requests in flight: the next chunk is built while one is written
REPLAY_BATCH = 1_000


def reindex_lock_name(alias: str) -> str:
    """The advisory-lock name a reindex of ``alias`` holds while it runs."""
    return f"hos-search reindex {alias}"


def hold_name(alias: str) -> str:
    """The checkpoint row a reindex of ``alias`` registers so pruning keeps what it replays."""
    return f"reindex:{alias}"


class ReindexError(Exception):
    """The reindex cannot run or was abandoned; the live alias is untouched."""


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
    new_index: str | None = None
    swapped = False
    completed = False
    try:
        if not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", reindex_lock_name(alias)):
            raise ReindexError(f"another reindex of {alias!r} is running")
        live = await alias_targets(engine, alias)
        orphans = [name for name in await _versioned_indexes(engine, alias) if name not in live]
        if orphans:
            log.warning("reindex: deleting %d orphan index(es) of an abandoned reindex: %s", len(orphans), orphans)
            await _delete_indexes(engine, orphans)
        floor = await hold_checkpoint(conn, hold)
        new_index = versioned_index_name(alias)
        await engine.indices.create(
            index=new_index,
            settings=index_settings(loading=True, replicas=settings.index_replicas),
            mappings=index_mappings(),
        )
        log.info("reindex: loading %s (alias %s, currently on %s)", new_index, alias, live or "nothing")
        cursor, documents = await _load(conn, sink, new_index, stop, metrics, floor)
        log.info("reindex: loaded %d documents; replaying changes made since the snapshot", documents)
        cursor, replayed = await _replay(conn, cursor, sink, new_index, stop, metrics, hold)
        await engine.indices.put_settings(index=new_index, settings=live_settings(replicas=settings.index_replicas))
        await engine.indices.refresh(index=new_index)
        live = await alias_targets(engine, alias)
        actions: list[dict[str, dict[str, str]]] = [{"remove": {"index": name, "alias": alias}} for name in live]
        actions.append({"add": {"index": new_index, "alias": alias}})
        await engine.indices.update_aliases(actions=actions)
        swapped = True
        log.info("reindex: alias %s now on %s (was %s)", alias, new_index, live or "nothing")
        cursor, after_swap = await _replay(conn, cursor, sink, new_index, stop, metrics, hold, must_finish=True)
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
        if swapped and not completed:
            # Changes the streamer wrote to the old index just before the swap may be missing
            # from the new one: the hold row tells the streamer where to replay from
            # (indexer.service recovers an abandoned reindex).
            log.warning("reindex: failed after the swap; leaving %s for the streamer to replay from", hold)
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

    async def write(chunk: list[Action]) -> None:
        if await sink.write(index, chunk, stop) is None:
            raise ReindexError("stopped while loading")

    async def settle(until: int) -> None:
        nonlocal in_flight
        while len(in_flight) > until:
            done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a failed write fails the load

    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            # The first statement fixes the transaction's snapshot: the rows, the versions and
            # the in-progress xids below all belong to it. The xid it takes is newer than any
            # handed out before the snapshot (see indexer.outbox.running_at).
            first = await conn.fetchrow("SELECT pg_current_snapshot() AS snap, pg_current_xact_id() AS me")
            assert first is not None
            _xmin, xmax, xip = first["snap"]
            running = running_at(xip, xmax, first["me"])
            max_visible = int(await conn.fetchval("SELECT coalesce(max(seq), 0) FROM search_outbox"))
            chunk: list[Action] = []
            async for row in conn.cursor(_LOAD_SQL, prefetch=LOAD_CHUNK):
                if not is_searchable(row):
                    continue
                chunk.append(Action(row["id"], row["version"], product_document(row)))
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
    metrics.reindex_documents.inc(documents)
    return OutboxCursor.after_snapshot(floor=floor, max_visible=max_visible, running=running), documents


async def _replay(
    conn: asyncpg.Connection,
    cursor: OutboxCursor,
    sink: Sink,
    index: str,
    stop: asyncio.Event,
    metrics: IndexerMetrics,
    hold: str,
    *,
    must_finish: bool = False,
) -> tuple[OutboxCursor, int]:
    """Apply outbox changes into ``index`` until a read finds nothing more waiting."""
    replayed = 0
    # After the swap, stopping halfway would lose changes the streamer wrote to the old index.
    never = asyncio.Event()
    while True:
        outcome = await run_batch(
            conn, cursor, sink, index, never if must_finish else stop, metrics, limit=REPLAY_BATCH
        )
        if outcome is None:
            raise ReindexError("stopped while replaying changes")
        replayed += len(outcome.window.changes)
        if outcome.cursor.checkpoint != cursor.checkpoint:
            await advance_checkpoint(conn, hold, outcome.cursor.checkpoint)  # lets pruning proceed
        cursor = outcome.cursor
        if not outcome.window.more_waiting:
            return cursor, replayed
        if stop.is_set() and not must_finish:
            raise ReindexError("stopped while replaying changes")
