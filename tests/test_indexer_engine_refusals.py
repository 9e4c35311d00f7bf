"""What the engine refuses is retried, split or set aside by its cause — never dropped unread.

A read-only index (``index.blocks.write``: a full disk, a snapshot restore, a shrink) pauses the
stream; a batch over the engine's request size is split down to single documents; only a
document's own fault is set aside.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from elasticsearch import AsyncElasticsearch

from devstack.stack import StackUrls
from indexer.settings import IndexerSettings
from tests.indexer_support import add_product, add_seller, eventually, indexed, indexer_settings, running_indexer

# Hop-by-hop, or recomputed by aiohttp for the body it sends (an answer is passed back
# decompressed).
_NOT_FORWARDED = {
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "content-encoding",
    "keep-alive",
    "accept-encoding",
}


@contextlib.asynccontextmanager
async def request_size_limit(target: str, max_bytes: int) -> AsyncIterator[str]:
    """An HTTP front of the engine that answers 413 to a body over ``max_bytes`` and forwards
    anything else, as ``http.max_content_length`` does (the shared dev node's limit cannot be
    changed for one test). Yields its URL."""
    async with aiohttp.ClientSession() as session:

        async def forward(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            if len(body) > max_bytes:
                return web.json_response({"error": "content too long"}, status=413)
            headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
            async with session.request(
                request.method, target + request.rel_url.raw_path_qs, data=body, headers=headers
            ) as answer:
                payload = await answer.read()
                kept = {k: v for k, v in answer.headers.items() if k.lower() not in _NOT_FORWARDED}
                return web.Response(status=answer.status, body=payload, headers=kept)

        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/{tail:.*}", forward)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            port = runner.addresses[0][1]
            yield f"http://127.0.0.1:{port}"
        finally:
            await runner.cleanup()


@pytest.fixture
def settings(stack_urls: StackUrls, database_url: str, index_alias: str, redis_prefix: str) -> IndexerSettings:
    return indexer_settings(stack_urls, database_url, index_alias, redis_prefix)


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
    async with request_size_limit(settings.elasticsearch_node, max_bytes=8_000) as front:
        from dataclasses import replace

        async with running_indexer(replace(settings, elasticsearch_node=front)) as metrics:
            async with db.transaction():  # one batch: ~30 KB, over the limit as a whole
                ids = [await add_product(db, seller, f"Scroll {n}") for n in range(20)]
                await db.execute(
                    "UPDATE products SET description = repeat('parchment ', 100) WHERE id = ANY($1::bigint[])", ids
                )
                huge = await add_product(db, seller, "Unabridged Scroll")
                await db.execute("UPDATE products SET description = repeat('parchment ', 990) WHERE id = $1", huge)
            for product_id in ids:
                await eventually(lambda product_id=product_id: indexed(engine, alias, product_id), what="a split write")

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
