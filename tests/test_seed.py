"""Loading the sample catalog into Postgres."""

from __future__ import annotations

import asyncpg
import pytest

from catalog.generator import seller_count
from catalog.seed import SeedError, seed_catalog


async def test_seed_loads_products_sellers_and_their_outbox_rows(db: asyncpg.Connection) -> None:
    result = await seed_catalog(db, 500, seed=3)
    assert result.products == 500
    assert await db.fetchval("SELECT count(*) FROM products") == 500
    assert await db.fetchval("SELECT count(*) FROM sellers") == seller_count(500)
    # Seeding is an ordinary write: the indexer learns about every product from the outbox.
    assert await db.fetchval("SELECT count(DISTINCT product_id) FROM search_outbox WHERE op = 'upsert'") == 500
    # The identity sequences moved past the explicit ids: a new product does not collide.
    seller = await db.fetchval("SELECT min(id) FROM sellers")
    new_id = await db.fetchval(
        "INSERT INTO products (seller_id, name, category, fandom, price) VALUES ($1, 'x', 'props', 'Dune', 1) "
        "RETURNING id",
        seller,
    )
    assert new_id == 501


async def test_seed_refuses_a_non_empty_catalog_and_names_the_table(db: asyncpg.Connection) -> None:
    await seed_catalog(db, 50)
    with pytest.raises(SeedError, match="products is not empty"):
        await seed_catalog(db, 50)


async def test_replacing_deletes_the_old_catalog_through_the_outbox(db: asyncpg.Connection) -> None:
    await seed_catalog(db, 200, seed=1)
    high_water = await db.fetchval("SELECT max(seq) FROM search_outbox")
    await seed_catalog(db, 100, seed=2, replace=True)
    assert await db.fetchval("SELECT count(*) FROM products") == 100
    deleted = await db.fetchval("SELECT count(*) FROM search_outbox WHERE op = 'delete' AND seq > $1", high_water)
    assert deleted == 200  # every old product's document will be deleted by the indexer
    # The outbox keeps counting up, so the new catalog's changes outrank what is indexed.
    assert await db.fetchval("SELECT min(seq) FROM search_outbox WHERE seq > $1", high_water) > high_water


async def test_the_same_seed_gives_the_same_catalog(database_url: str, db: asyncpg.Connection) -> None:
    await seed_catalog(db, 300, seed=9)
    first = await db.fetch("SELECT id, name, price, fandom, status FROM products ORDER BY id")
    await seed_catalog(db, 300, seed=9, replace=True)
    again = await db.fetch("SELECT id, name, price, fandom, status FROM products ORDER BY id")
    assert [tuple(r) for r in first] == [tuple(r) for r in again]
