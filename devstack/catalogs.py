"""Scratch catalogs: a seeded database indexed behind a fresh alias, for one benchmark or load run.

A benchmark and ``make load`` each need a catalog of their own on the dev stack (or on the servers
the environment names): a fresh database with N sample products, indexed by a real reindex behind
an alias nobody else uses, and removed afterwards. This is the one place that builds and removes
one. Never touches a database or an index it did not create; never used by the proxy or indexer.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

import asyncpg

from devstack.databases import ScratchDatabases
from devstack.stack import StackUrls

if TYPE_CHECKING:
    from indexer.settings import IndexerSettings


def scratch_indexer_settings(urls: StackUrls, database_url: str, alias: str, redis_prefix: str) -> IndexerSettings:
    """An indexer's settings for a scratch catalog on the stack's servers: no metrics listener,
    no replicas (one node), the stack's Redis whether one server or a cluster."""
    from indexer.settings import IndexerSettings

    return IndexerSettings(
        database_url=database_url,
        redis_url=urls.redis_url,
        redis_cluster=urls.redis_cluster,
        redis_key_prefix=redis_prefix,
        elasticsearch_node=urls.elasticsearch_node,
        search_index=alias,
        metrics_port=0,
        index_replicas=0,
    )


async def prepare_catalog(dbs: ScratchDatabases, urls: StackUrls, products: int) -> tuple[str, str]:
    """``(database URL, alias)``: a fresh database with N sample products, indexed by a real reindex."""
    # Imported here: only a run that builds a catalog pays for the indexer's imports.
    from catalog.seed import seed_catalog
    from indexer.service import run_reindex

    url = await dbs.create("proxy")
    conn = await asyncpg.connect(url)
    try:
        await seed_catalog(conn, products)
    finally:
        await conn.close()
    alias = f"bench{uuid.uuid4().hex[:8]}_products"
    await run_reindex(scratch_indexer_settings(urls, url, alias, f"{alias}:"), asyncio.Event())
    return url, alias


async def remove_catalog(dbs: ScratchDatabases, engine_url: str, alias: str | None) -> None:
    """Drop what :func:`prepare_catalog` created, so a run against real servers leaves nothing behind."""
    from catalog.engine import create_engine_client

    await dbs.drop_all()
    if alias:
        client, _ = await create_engine_client(engine_url)
        try:
            await client.indices.delete(index=f"{alias}*", ignore_unavailable=True, allow_no_indices=True)
        finally:
            await client.close()
