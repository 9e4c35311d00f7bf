"""Rows the schema accepted but no document can be made of: set aside, never a crash.

Each test first drops the constraints of ``0005_poison_rows.sql`` (they are ``NOT VALID``: they
hold for new rows), as a database whose rows were written before that migration would be.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from elasticsearch import AsyncElasticsearch

from catalog.document import MAX_DESCRIPTION_CHARS
from catalog.logs import RepeatFilter
from catalog.migrate import validate_constraints
from devstack.servers import free_port
from devstack.stack import StackUrls
from indexer.metrics import IndexerMetrics
from indexer.service import run_reindex
from indexer.settings import IndexerSettings
from proxy.app import create_app
from tests.conftest import SearchCatalog, proxy_settings
from tests.indexer_support import (
    add_product,
    add_seller,
    eventually,
    indexed,
    running_indexer,
    searchable,
)

ROOT = Path(__file__).resolve().parent.parent
NEW_CONSTRAINTS = (
    "products_created_at_finite",
    "products_updated_at_finite",
    "products_price_finite",
    "products_description_length",
    "products_image_url_length",
)


@pytest_asyncio.fixture(loop_scope="session")
async def old_db(db: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """The test's database as it was before the constraints: poison rows can be written."""
    for name in NEW_CONSTRAINTS:
        await db.execute(f"ALTER TABLE products DROP CONSTRAINT {name}")
    yield db


async def _poison(db: asyncpg.Connection, seller: int) -> dict[str, int]:
    """One product of each kind of poison, and good ones around them, in one transaction (one batch)."""
    async with db.transaction():
        ids = {
            "before": await add_product(db, seller, "Fine Before"),
            "past": await add_product(db, seller, "Forever Ago"),
            "future": await add_product(db, seller, "Forever After"),
            "nan": await add_product(db, seller, "Priceless"),
            "huge": await add_product(db, seller, "Long Story"),
            "after": await add_product(db, seller, "Fine After"),
        }
        await db.execute("UPDATE products SET created_at = '-infinity' WHERE id = $1", ids["past"])
        await db.execute("UPDATE products SET created_at = 'infinity' WHERE id = $1", ids["future"])
        await db.execute("UPDATE products SET price = 'NaN' WHERE id = $1", ids["nan"])
        await db.execute("UPDATE products SET description = repeat('lorem ipsum ', 200000) WHERE id = $1", ids["huge"])
    return ids


POISONED = ("past", "future", "nan")
GOOD = ("before", "huge", "after")


async def _dead_letters(db: asyncpg.Connection) -> dict[int, str]:
    return {r["product_id"]: r["reason"] for r in await db.fetch("SELECT product_id, reason FROM search_dead_letters")}


async def test_poison_rows_are_set_aside_and_the_rest_of_their_batch_is_searchable(
    settings: IndexerSettings, old_db: asyncpg.Connection, engine: AsyncElasticsearch, caplog: pytest.LogCaptureFixture
) -> None:
    db = old_db
    # As the entry points log: repeats of a line's template are held back (catalog.logs).
    caplog.handler.addFilter(RepeatFilter())
    caplog.set_level(logging.ERROR, logger="hos_search.indexer")
    seller = await add_seller(db)
    async with running_indexer(settings) as metrics:
        ids = await _poison(db, seller)
        for name in GOOD:
            await eventually(partial(searchable, engine, settings.search_index, ids[name]), what=name)
        huge = await indexed(engine, settings.search_index, ids["huge"])
        assert huge is not None and len(huge["description"]) == MAX_DESCRIPTION_CHARS
        for name in POISONED:
            assert await indexed(engine, settings.search_index, ids[name]) is None
        letters = await _dead_letters(db)
        assert set(letters) == {ids[name] for name in POISONED}
        assert "created_at" in letters[ids["past"]] and "price" in letters[ids["nan"]]
        assert metrics.dead_lettered.labels(stage="document")._value.get() == 3
        logged = caplog.text
        assert all(f"product {ids[name]} set aside" in logged for name in POISONED), logged  # every id

        # The stream carries on; a fix of the row is retried and clears its dead letter.
        later = await add_product(db, seller, "Later Still")
        await db.execute("UPDATE products SET price = 12.50 WHERE id = $1", ids["nan"])
        await eventually(lambda: indexed(engine, settings.search_index, later), what="a later change")
        await eventually(lambda: indexed(engine, settings.search_index, ids["nan"]), what="the fixed row")

        async def cleared() -> bool:
            return ids["nan"] not in await _dead_letters(db)

        await eventually(cleared, what="the fixed row's dead letter cleared")
        assert set(await _dead_letters(db)) == {ids["past"], ids["future"]}


async def test_a_reindex_carries_on_past_poison_rows(
    settings: IndexerSettings, old_db: asyncpg.Connection, engine: AsyncElasticsearch
) -> None:
    ids = await _poison(old_db, await add_seller(old_db))
    metrics = IndexerMetrics()
    await run_reindex(settings, asyncio.Event(), metrics=metrics)
    for name in GOOD:
        assert await searchable(engine, settings.search_index, ids[name]), name
    for name in POISONED:
        assert await indexed(engine, settings.search_index, ids[name]) is None, name
    assert set(await _dead_letters(old_db)) == {ids[name] for name in POISONED}
    assert metrics.dead_lettered.labels(stage="document")._value.get() == 3


async def test_a_fallback_search_showing_poison_rows_answers_without_them(
    stack_urls: StackUrls, database_url: str, old_db: asyncpg.Connection
) -> None:
    ids = await _poison(old_db, await add_seller(old_db))
    await old_db.execute("UPDATE products SET image_url = 'javascript:alert(1)' WHERE id = $1", ids["before"])
    catalog = SearchCatalog(database_url, f"p{uuid.uuid4().hex[:10]}", "unused")
    # No engine: every answer is the Postgres fallback's.
    settings = proxy_settings(catalog, stack_urls, elasticsearch_node=f"http://127.0.0.1:{free_port()}")
    async with TestClient(TestServer(create_app(settings))) as client:
        for sort in ("newest", "price_desc", "price_asc"):
            response = await client.get(f"/api/search?sort={sort}")
            assert response.status == 200, await response.text()
            assert response.headers["X-Search-Backend"] == "postgres"
            items = {int(item["id"]): item for item in (await response.json())["items"]}
            assert set(items) == {ids[name] for name in GOOD}, sort
            assert items[ids["before"]]["image_url"] is None
            assert len(items[ids["huge"]]["description"]) == MAX_DESCRIPTION_CHARS
        response = await client.get("/api/search?q=forever")
        assert response.status == 200 and (await response.json())["items"] == []
        for name in POISONED:
            assert (await client.get(f"/api/products/{ids[name]}")).status == 404


async def test_migrate_names_the_rows_that_violate_the_new_constraints(old_db: asyncpg.Connection) -> None:
    ids = await _poison(old_db, await add_seller(old_db))
    for name in NEW_CONSTRAINTS:
        definition = {
            "products_created_at_finite": "CHECK (isfinite(created_at))",
            "products_updated_at_finite": "CHECK (isfinite(updated_at))",
            "products_price_finite": "CHECK (price <> 'NaN')",
            "products_description_length": "CHECK (length(description) <= 10000)",
            "products_image_url_length": "CHECK (length(image_url) <= 2048)",
        }[name]
        await old_db.execute(f"ALTER TABLE products ADD CONSTRAINT {name} {definition} NOT VALID")
    checks = {check.constraint: check for check in await validate_constraints(old_db)}
    assert checks["products_created_at_finite"].row_ids == tuple(sorted((ids["past"], ids["future"])))
    assert checks["products_price_finite"].row_ids == (ids["nan"],)
    assert checks["products_description_length"].row_ids == (ids["huge"],)
    assert "violate" in str(checks["products_price_finite"]) and str(ids["nan"]) in str(checks["products_price_finite"])
    assert checks["products_updated_at_finite"].violations == 0  # validated now
    assert checks["products_image_url_length"].violations == 0
    validated = await old_db.fetch(
        "SELECT conname FROM pg_constraint"
        " WHERE conrelid = 'products'::regclass AND convalidated AND conname = ANY($1)",
        list(NEW_CONSTRAINTS),
    )
    assert {r["conname"] for r in validated} == {"products_updated_at_finite", "products_image_url_length"}
    # New poison is refused at once, validated or not.
    with pytest.raises(asyncpg.CheckViolationError):
        await old_db.execute("UPDATE products SET price = 'NaN' WHERE id = $1", ids["before"])


async def test_hos_search_migrate_prints_the_violating_rows_and_validates_the_rest(
    database_url: str, old_db: asyncpg.Connection
) -> None:
    ids = await _poison(old_db, await add_seller(old_db))
    await old_db.execute("ALTER TABLE products ADD CONSTRAINT products_price_finite CHECK (price <> 'NaN') NOT VALID")
    await old_db.execute(
        "ALTER TABLE products ADD CONSTRAINT products_updated_at_finite CHECK (isfinite(updated_at)) NOT VALID"
    )
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "hos_search", "migrate"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"products.products_price_finite: 1 existing row(s) violate it (id {ids['nan']})" in result.stderr
    assert "products.products_updated_at_finite: validated" in result.stdout
