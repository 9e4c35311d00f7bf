"""Turning a batch of outbox changes into engine actions: one per product, with its version.

Repeated changes of one product coalesce into one action. The current rows (with the seller's
name) are fetched in one query, together with each product's *version*: the highest outbox seq
for that product visible in the same snapshot. Active products are indexed, every other case
(deleted, draft, archived) is a delete — deletes carry the version too. Each action also names
the product's seller while its row exists, for the tags the generation announces.

Why the version is "highest visible seq for the product" rather than "highest seq in this
batch": a change can commit after a higher-seq change of the same product (a seller rename,
which does not lock the seller's product rows, against a price update). Data fetched later is
never older, and the visible set only grows, so this version never goes down as the data gets
newer; writes use ``version_type=external_gte`` so a refetch with equal version (the late
rename) still lands, while data fetched earlier than what the index holds is refused (409).
Within one indexer, batches are written one after another, so the last write is the freshest.

:func:`run_batch` is one step of any outbox reader (the streamer, a reindex's replay): read a
window, fetch, write, and only then return the advanced cursor — the caller stores it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import asyncpg

from catalog.document import PRODUCT_ROWS_SQL, UnindexableRow, is_searchable, product_document
from indexer import dead_letters
from indexer.metrics import IndexerMetrics
from indexer.outbox import Change, OutboxCursor, Window, read_window
from indexer.sink import Action, Sink, SinkResult


def product_ids(changes: Iterable[Change]) -> list[int]:
    """The distinct products of a batch, in first-seen order (repeated changes coalesce)."""
    return list(dict.fromkeys(change.product_id for change in changes))


# The versions and the rows in one statement: one snapshot, so a version never claims data
# newer than the row it travels with. ``seq > $2`` (the reader's checkpoint) bounds the scan;
# every product of the batch has a visible row above it, so the max is unaffected. (Unless
# pruned meanwhile: a completed reindex may move the stored checkpoint past a running stream.
# Pruned rows are below every checkpoint, so that reindex wrote them; the max of the rows left
# is still the product's, and a product with none left needs no write from this batch.)
_FETCH_SQL = f"""
SELECT v.product_id AS version_of, v.version, r.*
  FROM (SELECT product_id, max(seq) AS version FROM search_outbox
         WHERE seq > $2 AND product_id = ANY($1::bigint[]) GROUP BY product_id) v
  LEFT JOIN ({PRODUCT_ROWS_SQL} WHERE p.id = ANY($1::bigint[])) r ON r.id = v.product_id
"""


def action_for(product_id: int, version: int, row: asyncpg.Record | None) -> Action:
    """Index the row if it is searchable, else delete; the seller is known while the row exists.
    A row no document can be made of is deleted from the index and set aside (its reason)."""
    if row is None or row["id"] is None:
        return Action(product_id, version, None)  # deleted: its seller went with the row
    seller_id = int(row["seller_id"])
    if not is_searchable(row):
        return Action(product_id, version, None, seller_id)
    try:
        return Action(product_id, version, product_document(row), seller_id)
    except UnindexableRow as exc:
        return Action(product_id, version, None, seller_id, set_aside=exc.reason)


async def record_outcome(
    conn: asyncpg.Connection, actions: Iterable[Action], result: SinkResult, metrics: IndexerMetrics
) -> None:
    """The dead-letter table after a write: products set aside now are recorded (document or
    engine), products indexed or deleted now are cleared (a change fixed them)."""
    aside = [(action.product_id, action.set_aside) for action in actions if action.set_aside is not None]
    refused = [(action.product_id, reason) for action, reason in result.rejections]
    recorded = {product_id for product_id, _ in aside}
    await dead_letters.clear(conn, [a.product_id for a in result.changed if a.product_id not in recorded])
    await dead_letters.set_aside(conn, aside, metrics, "document")
    await dead_letters.set_aside(conn, refused, metrics, "engine")


async def fetch_actions(conn: asyncpg.Connection, changes: Iterable[Change], *, above: int) -> list[Action]:
    """One action per product of ``changes``; ``above`` is a seq below every change's seq."""
    ids = product_ids(changes)
    if not ids:
        return []
    records = await conn.fetch(_FETCH_SQL, ids, above)
    return [action_for(r["version_of"], r["version"], r) for r in records]


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    cursor: OutboxCursor  # advanced past the window; not yet stored
    window: Window
    result: SinkResult


async def run_batch(
    conn: asyncpg.Connection,
    cursor: OutboxCursor,
    sink: Sink,
    index: str,
    stop: asyncio.Event,
    metrics: IndexerMetrics,
    *,
    limit: int,
    alias: bool = False,
    fence: Callable[[], bool] | None = None,
) -> BatchOutcome | None:
    """Read, fetch and write one window; ``None`` when stopped (or fenced, see
    :meth:`Sink.write`) before the writes landed."""
    window = await read_window(conn, cursor, limit)
    result = SinkResult()
    changes = window.changes
    if changes:
        metrics.changes_seen.inc(len(changes))
        metrics.batch_size.observe(len(changes))
        metrics.mark_pending(min((c.created_at.timestamp() for c in changes if c.created_at), default=None))
        actions = await fetch_actions(conn, changes, above=cursor.checkpoint)
        written = await sink.write(index, actions, stop, alias=alias, fence=fence)
        if written is None:
            return None
        result = written
        await record_outcome(conn, actions, result, metrics)
        metrics.documents_indexed.inc(result.indexed)
        metrics.documents_deleted.inc(result.deleted)
        metrics.version_conflicts.inc(result.conflicts)
        metrics.last_success.set_to_current_time()
    metrics.clear_pending()
    return BatchOutcome(cursor.advance(window), window, result)
