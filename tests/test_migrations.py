"""Migrations: applied once, in order, safely from two processes at once."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from catalog.migrate import Migration, MigrationError, load_migrations, migrate

EXPECTED_TABLES = {"sellers", "products", "search_outbox", "search_indexer_checkpoint", "schema_migrations"}


async def _tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows}


async def test_migrate_creates_the_catalog_schema_and_is_idempotent(empty_database_url: str) -> None:
    conn = await asyncpg.connect(empty_database_url)
    try:
        first = await migrate(conn)
        second = await migrate(conn)
        assert first == [m.version for m in load_migrations()]
        assert second == []
        assert EXPECTED_TABLES <= await _tables(conn)
        recorded = await conn.fetchval("SELECT count(*) FROM schema_migrations")
        assert recorded == len(first)
    finally:
        await conn.close()


async def test_concurrent_migrations_take_turns(empty_database_url: str) -> None:
    conns = [await asyncpg.connect(empty_database_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        applied = sorted(results, key=len, reverse=True)
        assert applied[0] == [m.version for m in load_migrations()]
        assert applied[1:] == [[], []]
        assert EXPECTED_TABLES <= await _tables(conns[0])
    finally:
        for c in conns:
            await c.close()


async def test_an_edited_applied_migration_is_refused(empty_database_url: str) -> None:
    conn = await asyncpg.connect(empty_database_url)
    try:
        migrations = load_migrations()
        await migrate(conn, migrations)
        edited = [Migration(migrations[0].version, migrations[0].name, migrations[0].sql + "\n-- edited")]
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await migrate(conn, edited)
    finally:
        await conn.close()


async def test_a_failing_migration_is_rolled_back_and_named(empty_database_url: str) -> None:
    conn = await asyncpg.connect(empty_database_url)
    try:
        broken = [Migration("0001", "broken", "CREATE TABLE half_done (id int); SELECT no_such_function();")]
        with pytest.raises(MigrationError, match="0001_broken failed"):
            await migrate(conn, broken)
        assert "half_done" not in await _tables(conn)
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 0
    finally:
        await conn.close()
