"""Every change that matters to search appends to the outbox and rings the doorbell."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest_asyncio


class Doorbell:
    """A LISTEN connection on channel ``search_outbox`` counting notifications."""

    def __init__(self) -> None:
        self.payloads: asyncio.Queue[str] = asyncio.Queue()

    def on_notify(self, conn: object, pid: int, channel: str, payload: str) -> None:
        self.payloads.put_nowait(payload)

    async def rang(self, timeout: float = 5.0) -> str:
        return await asyncio.wait_for(self.payloads.get(), timeout)


@pytest_asyncio.fixture(loop_scope="session")
async def doorbell(database_url: str) -> AsyncIterator[Doorbell]:
    bell = Doorbell()
    conn = await asyncpg.connect(database_url)
    await conn.add_listener("search_outbox", bell.on_notify)
    try:
        yield bell
    finally:
        await conn.close()


async def _seller(db: asyncpg.Connection, name: str = "Ollivanders") -> int:
    return int(await db.fetchval("INSERT INTO sellers (name) VALUES ($1) RETURNING id", name))


async def _product(db: asyncpg.Connection, seller_id: int, name: str = "Elder Wand") -> int:
    return int(
        await db.fetchval(
            """INSERT INTO products (seller_id, name, category, fandom, price, stock, status)
           VALUES ($1, $2, 'props', 'Harry Potter', 29.99, 3, 'active') RETURNING id""",
            seller_id,
            name,
        )
    )


async def _outbox(db: asyncpg.Connection) -> list[tuple[int, str]]:
    rows = await db.fetch("SELECT product_id, op FROM search_outbox ORDER BY seq")
    return [(r["product_id"], r["op"]) for r in rows]


async def test_insert_appends_upsert_and_notifies(db: asyncpg.Connection, doorbell: Doorbell) -> None:
    product = await _product(db, await _seller(db))
    assert await _outbox(db) == [(product, "upsert")]
    assert await doorbell.rang() == "products"


async def test_update_appends_upsert_and_notifies(db: asyncpg.Connection, doorbell: Doorbell) -> None:
    product = await _product(db, await _seller(db))
    await doorbell.rang()
    await db.execute("UPDATE products SET price = 31.50 WHERE id = $1", product)
    assert await _outbox(db) == [(product, "upsert"), (product, "upsert")]
    assert await doorbell.rang() == "products"


async def test_noop_update_is_not_a_change(db: asyncpg.Connection) -> None:
    product = await _product(db, await _seller(db))
    await db.execute("UPDATE products SET price = price WHERE id = $1", product)
    assert await _outbox(db) == [(product, "upsert")]


async def test_delete_appends_delete_and_notifies(db: asyncpg.Connection, doorbell: Doorbell) -> None:
    product = await _product(db, await _seller(db))
    await doorbell.rang()
    await db.execute("DELETE FROM products WHERE id = $1", product)
    assert await _outbox(db) == [(product, "upsert"), (product, "delete")]
    assert await doorbell.rang() == "products"


async def test_status_change_appends_upsert(db: asyncpg.Connection, doorbell: Doorbell) -> None:
    product = await _product(db, await _seller(db))
    await doorbell.rang()
    await db.execute("UPDATE products SET status = 'archived' WHERE id = $1", product)
    assert await _outbox(db) == [(product, "upsert"), (product, "upsert")]
    assert await doorbell.rang() == "products"


async def test_seller_rename_touches_every_product_of_that_seller(db: asyncpg.Connection, doorbell: Doorbell) -> None:
    seller = await _seller(db, "Ollivanders")
    other = await _seller(db, "Weasleys")
    mine = [await _product(db, seller, f"Wand {i}") for i in range(3)]
    theirs = await _product(db, other, "Extendable Ears")
    await db.execute("DELETE FROM search_outbox")
    await db.execute("UPDATE sellers SET name = 'Ollivanders Ltd' WHERE id = $1", seller)
    assert sorted(await _outbox(db)) == sorted((p, "upsert") for p in mine)
    assert theirs not in [p for p, _ in await _outbox(db)]
    while True:  # drain the inserts' doorbells; the rename rings with payload 'sellers'
        if await doorbell.rang() == "sellers":
            break


async def test_outbox_row_and_notification_belong_to_the_transaction(
    db: asyncpg.Connection, doorbell: Doorbell
) -> None:
    seller = await _seller(db)
    tx = db.transaction()
    await tx.start()
    await _product(db, seller)
    await tx.rollback()
    assert await _outbox(db) == []
    assert doorbell.payloads.empty()
    await asyncio.sleep(0.2)
    assert doorbell.payloads.empty()


async def test_one_bulk_transaction_rings_once(db: asyncpg.Connection, doorbell: Doorbell) -> None:
    seller = await _seller(db)
    async with db.transaction():
        for i in range(50):
            await _product(db, seller, f"Wand {i}")
    assert len(await _outbox(db)) == 50
    assert await doorbell.rang() == "products"
    await asyncio.sleep(0.2)
    assert doorbell.payloads.empty()
