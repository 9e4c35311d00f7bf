"""What the engine refuses is retried, split or set aside by its cause — never dropped unread.

A read-only index (``index.blocks.write``: a full disk, a snapshot restore, a shrink) pauses the
stream; a batch over the engine's request size is split down to single documents; only a
document's own fault is set aside.
"""

from __future__ import annotations

import asyncio
import uuid
from functools import partial

import asyncpg
import pytest
from elasticsearch import AsyncElasticsearch

from catalog.engine import create_engine_client
from indexer.metrics import IndexerMetrics
from indexer.settings import IndexerSettings
from indexer.sink import Action, Sink, classify
from tests.indexer_support import (
    add_product,
    add_seller,
    engine_front,
    eventually,
    indexed,
    running_indexer,
    searchable,
)


async def _checkpoint(db: asyncpg.Connection) -> int:
    return int(
        await db.fetchval("SELECT coalesce(max(last_seq), 0) FROM search_indexer_checkpoint WHERE name = 'main'")
    )


async def test_a_read_only_index_pauses_the_stream_without_losing_a_change_and_it_resumes_when_lifted(
    settings: IndexerSettings, db: asyncpg.Connection, engine: AsyncElasticsearch
) -> None:
    alias = settings.search_index
    seller = await add_seller(db)
    async with running_indexer(settings) as metrics:
        first = await add_product(db, seller, "Before The Block")
        await eventually(lambda: indexed(engine, alias, first), what="a change before the block")
        await engine.indices.put_settings(index=alias, settings={"index.blocks.write": True})
        try:
            blocked = await add_product(db, seller, "During The Block")
            seq = int(await db.fetchval("SELECT max(seq) FROM search_outbox"))

            async def refused() -> bool:
                errors = metrics.errors
                return (
                    errors.labels(kind="bulk_item_retryable")._value.get()
                    + errors.labels(kind="engine_request")._value.get()
                ) >= 2

            await eventually(refused, what="the blocked write refused and retried")
            assert await indexed(engine, alias, blocked) is None
            assert await _checkpoint(db) < seq  # the stream waits at the change; nothing is skipped
            assert metrics.dead_lettered.labels(stage="engine")._value.get() == 0
        finally:
            await engine.indices.put_settings(index=alias, settings={"index.blocks.write": None})
        await eventually(lambda: indexed(engine, alias, blocked), what="the change once the block is lifted")

        async def past() -> bool:
            return await _checkpoint(db) >= seq

        await eventually(past, what="the checkpoint past the change")
        assert await db.fetchval("SELECT count(*) FROM search_dead_letters") == 0


async def test_a_batch_over_the_engine_request_limit_is_split_and_only_a_document_too_large_alone_is_set_aside(
    settings: IndexerSettings, db: asyncpg.Connection, engine: AsyncElasticsearch
) -> None:
    alias = settings.search_index
    seller = await add_seller(db)
    async with engine_front(settings.elasticsearch_node, max_bytes=8_000) as front:
        from dataclasses import replace

        async with running_indexer(replace(settings, elasticsearch_node=front.url)) as metrics:
            async with db.transaction():  # one batch: ~30 KB, over the limit as a whole
                ids = [await add_product(db, seller, f"Scroll {n}") for n in range(20)]
                await db.execute(
                    "UPDATE products SET description = repeat('parchment ', 100) WHERE id = ANY($1::bigint[])", ids
                )
                huge = await add_product(db, seller, "Unabridged Scroll")
                await db.execute("UPDATE products SET description = repeat('parchment ', 990) WHERE id = $1", huge)
            for product_id in ids:
                await eventually(partial(searchable, engine, alias, product_id), what="a split write")

            async def set_aside() -> bool:
                return bool(await db.fetchval("SELECT count(*) FROM search_dead_letters WHERE product_id = $1", huge))

            await eventually(set_aside, what="the document too large alone set aside")
            reason = await db.fetchval("SELECT reason FROM search_dead_letters WHERE product_id = $1", huge)
            assert "413" in reason
            assert await indexed(engine, alias, huge) is None
            assert metrics.errors.labels(kind="bulk_too_large")._value.get() >= 3  # the batch, then halves
            assert metrics.dead_lettered.labels(stage="engine")._value.get() == 1
            later = await add_product(db, seller, "After The Scrolls")
            await eventually(lambda: indexed(engine, alias, later), what="the stream carrying on")


# --- the rules alone: what each engine answer means for one document -----------------------------


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        (429, {"type": "es_rejected_execution_exception"}, "retry"),  # throttled: it will land later
        (401, {"type": "security_exception"}, "retry"),  # a credential problem, not the document's
        (403, {"type": "security_exception"}, "retry"),
        (403, {"type": "cluster_block_exception"}, "retry"),  # read-only index: wait for the block to lift
        (503, {"type": "unavailable_shards_exception"}, "retry"),
        (404, {"type": "index_not_found_exception"}, "retry"),  # the alias is gone: a reindex brings it back
        (400, {"type": "mapper_parsing_exception"}, "permanent"),  # the document's own fault
        (500, {"type": "document_parsing_exception"}, "permanent"),
        (409, {"type": "version_conflict_engine_exception"}, "done"),  # a newer version is there already
        (201, None, "done"),
    ],
)
def test_only_a_documents_own_fault_sets_it_aside(status: int, error: dict[str, str] | None, expected: str) -> None:
    assert classify(status, error, is_delete=False) == expected


def test_deleting_a_document_that_is_not_there_is_done_but_a_missing_index_is_retried() -> None:
    assert classify(404, {"type": "not_found"}, is_delete=True) == "done"
    assert classify(404, {"type": "index_not_found_exception"}, is_delete=True) == "retry"


async def test_a_shard_without_a_primary_is_answered_within_the_bulk_timeout_and_holds_back_only_its_own_documents(
    engine: AsyncElasticsearch,
) -> None:
    """A shard whose primary is gone (a node lost, not yet replaced) is answered 503 per item
    inside the sink's timeout: only its documents are retried, the engine stays in the client's
    pool, and the rest land. Before, the engine waited its default minute for the primary, the
    client timed out on a healthy node, and every action of the request was re-sent."""
    index = f"red{uuid.uuid4().hex[:10]}"
    # Two primaries, at most one per node: on one node the second can never be allocated.
    await engine.indices.create(
        index=index,
        settings={"number_of_shards": 2, "number_of_replicas": 0, "routing.allocation.total_shards_per_node": 1},
        wait_for_active_shards="0",
    )
    try:
        metrics = IndexerMetrics()
        sink = Sink(engine, metrics, timeout=3.0)
        actions = [Action(n, 1, {"name": f"scroll {n}"}) for n in range(1, 41)]
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(5.0, stop.set)
        assert await sink.write(index, actions, stop) is None  # the missing shard's half never lands
        errors = metrics.errors
        assert errors.labels(kind="engine_unreachable")._value.get() == 0
        assert errors.labels(kind="bulk_item_retryable")._value.get() >= 2  # its items, each try

        async def landed() -> int:  # a refresh would wait for the missing shard: the periodic one shows them
            found = await engine.search(index=index, size=0, allow_partial_search_results=True, track_total_hits=True)
            return int(found["hits"]["total"]["value"])

        assert 0 < await eventually(landed, timeout=15, what="the allocated shard's documents") < len(actions)
    finally:
        await engine.indices.delete(index=index, ignore_unavailable=True)


async def test_a_bulk_that_times_out_is_sent_again_in_smaller_requests_until_it_lands(
    settings: IndexerSettings, engine: AsyncElasticsearch
) -> None:
    """An engine too slow for a request's size (a starved node) gets halves until they pass in
    time. Re-sent whole, the request timed out forever and the stream stood still."""
    index = f"slow{uuid.uuid4().hex[:10]}"
    await engine.indices.create(index=index, settings={"number_of_shards": 1, "number_of_replicas": 0})
    try:
        actions = [Action(n, 1, {"name": f"scroll {n}", "description": "parchment " * 20}) for n in range(1, 41)]
        async with engine_front(settings.elasticsearch_node, slow=(4_000, 3.0)) as front:
            client, _ = await create_engine_client(front.url, request_timeout=30)
            try:
                metrics = IndexerMetrics()
                sink = Sink(client, metrics, timeout=1.0)
                stop = asyncio.Event()
                asyncio.get_running_loop().call_later(20.0, stop.set)
                result = await sink.write(index, actions, stop)
                assert result is not None and result.indexed == len(actions)
                assert metrics.errors.labels(kind="engine_unreachable")._value.get() >= 1  # it did time out
                await engine.indices.refresh(index=index)
                found = await engine.count(index=index)
                assert found["count"] == len(actions)
            finally:
                await client.close()
    finally:
        await engine.indices.delete(index=index, ignore_unavailable=True)
