"""The fallback's typo strategy on real Postgres: typed words corrected against the catalog's
vocabulary (migration 0007's ``search_words``), which follows the catalog as it changes."""

from __future__ import annotations

from typing import Any

import asyncpg

from proxy.fallback.postgres import PostgresFallback
from proxy.params import SearchRequest

# Names sharing 8 of the 11 trigrams of "hary poter" — candidates of the old strategy's trigram
# index, each rechecked with word_similarity (0.4: not a match) — while none of their words is
# near "hary" or "poter". 40,000 of them took the old strategy 370 ms on a busy machine
# (30,000: 366 ms), the new one 13–16 ms.
DECOY = "Hamster Polo Charade Spotless Otter Mug"
DECOYS = 40_000
WANDS = 20
# Far above what correcting two words and matching 20 products takes, far below rechecking the
# decoys: the old strategy ran out of it here, and so answered 503.
TIGHT_STATEMENT_TIMEOUT_MS = 100


async def _add(conn: asyncpg.Connection, name: str, *, status: str = "active", copies: int = 1) -> int:
    product_id: int = await conn.fetchval(
        "INSERT INTO products (seller_id, name, category, fandom, price, stock, status)"
        " SELECT 1, $1, 'props', 'Harry Potter', 20, 1, $2 FROM generate_series(1, $3::int) RETURNING id",
        name,
        status,
        copies,
    )
    return product_id


async def _search(database_url: str, q: str, **limits: Any) -> tuple[dict[str, Any], bool]:
    backend = await PostgresFallback.open(
        database_url,
        **{"pool_size": 1, "statement_timeout_ms": 5_000, "max_concurrency": 1, "queue_wait": 1.0, **limits},
    )
    try:
        return await backend.search(SearchRequest(q=q, sort="relevance", size=50))
    finally:
        await backend.close()


def _names(body: dict[str, Any]) -> list[str]:
    return [hit["_source"]["name"] for hit in body["hits"]["hits"]]


async def test_a_typo_among_many_near_names_is_corrected_within_a_tight_statement_timeout(
    database_url: str, shop: asyncpg.Connection
) -> None:
    await shop.execute(
        "INSERT INTO products (seller_id, name, category, fandom, price, stock, status)"
        " SELECT 1, $1, 'homeware', 'Pets', 5, 1, 'active' FROM generate_series(1, $2::int)",
        DECOY,
        DECOYS,
    )
    await _add(shop, "Harry Potter Wand", copies=WANDS)
    await shop.execute("ANALYZE products")

    body, relaxed = await _search(database_url, "hary poter", statement_timeout_ms=TIGHT_STATEMENT_TIMEOUT_MS)

    assert relaxed is True
    assert body["hits"]["total"]["value"] == WANDS
    assert set(_names(body)) == {"Harry Potter Wand"}


async def test_the_vocabulary_follows_new_renamed_and_activated_products(
    database_url: str, shop: asyncpg.Connection
) -> None:
    await _add(shop, "Zorblax Figurine")
    body, relaxed = await _search(database_url, "zorblx")
    assert relaxed is True and _names(body) == ["Zorblax Figurine"]

    draft = await _add(shop, "Vexillor Banner", status="draft")
    body, _ = await _search(database_url, "vexilor")
    assert body["hits"]["total"]["value"] == 0  # a draft is not searchable
    await shop.execute("UPDATE products SET status = 'active' WHERE id = $1", draft)
    body, relaxed = await _search(database_url, "vexilor")
    assert relaxed is True and _names(body) == ["Vexillor Banner"]

    await shop.execute("UPDATE products SET name = 'Quillithorn Lantern' WHERE id = $1", draft)
    body, relaxed = await _search(database_url, "quilithorn")
    assert relaxed is True and _names(body) == ["Quillithorn Lantern"]
    # The old name's words stay in the vocabulary, and correct to nothing any product has.
    body, _ = await _search(database_url, "vexilor")
    assert body["hits"]["total"]["value"] == 0


async def test_a_price_change_does_not_touch_the_vocabulary(shop: asyncpg.Connection) -> None:
    product = await _add(shop, "Thestral Plush")
    words = await shop.fetchval("SELECT count(*) FROM search_words")
    await shop.execute("DELETE FROM search_words")
    await shop.execute("UPDATE products SET price = 25, stock = 3 WHERE id = $1", product)
    assert words > 0 and await shop.fetchval("SELECT count(*) FROM search_words") == 0
