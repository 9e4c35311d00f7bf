"""Products the indexer set aside: the rows of ``search_dead_letters``.

A product is set aside when no document can be built from its row
(:class:`catalog.document.UnindexableRow`: a non-finite timestamp or price) or when the engine
refuses its document for the document's own fault (a mapping rejection). Either way the stream
and a reindex carry on without it; the row here says which product, why, when it was first and
last seen, and how many times. A later change of the product reaches the indexer through the
outbox like any other and is tried again; once it is indexed or deleted its row here goes.

Never raises for a product's content, and never decides what is set aside: the batch does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import asyncpg

from indexer.metrics import IndexerMetrics

log = logging.getLogger("hos_search.indexer.dead_letters")

# A reason is for a person reading the table; the engine's can be long (it quotes the document).
MAX_REASON_CHARS = 500


async def set_aside(
    conn: asyncpg.Connection, entries: Sequence[tuple[int, str]], metrics: IndexerMetrics, stage: str
) -> None:
    """Record each (product id, reason); ``stage`` is ``document`` or ``engine`` (the metric's label)."""
    if not entries:
        return
    for product_id, reason in entries:
        # Every id on a line of its own, formatted here: catalog.logs.RepeatFilter holds back
        # repeats of a template, and a throttled line naming only the first hid the rest (issue 23).
        log.error(f"product {product_id} set aside ({stage}): {reason}")
    metrics.dead_lettered.labels(stage=stage).inc(len(entries))
    await conn.executemany(
        """INSERT INTO search_dead_letters (product_id, reason) VALUES ($1, $2)
           ON CONFLICT (product_id) DO UPDATE
              SET reason = EXCLUDED.reason, last_seen = now(),
                  attempts = search_dead_letters.attempts + 1""",
        [(product_id, reason[:MAX_REASON_CHARS]) for product_id, reason in entries],
    )


async def clear(conn: asyncpg.Connection, product_ids: Sequence[int]) -> None:
    """Forget the products that were just indexed or deleted (retried after a change, they took)."""
    if product_ids:
        await conn.execute("DELETE FROM search_dead_letters WHERE product_id = ANY($1::bigint[])", list(product_ids))
