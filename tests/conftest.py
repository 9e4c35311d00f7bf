"""Shared fixtures: one dev stack per test run, and per-test isolation inside it.

The stack is the embedded servers from ``devstack`` unless ``DATABASE_URL``, ``REDIS_URL`` or
``ELASTICSEARCH_NODE`` name real ones. Each test gets its own database (a copy of a migrated
template), its own index alias prefix and its own Redis key prefix, so tests cannot see each
other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from elasticsearch import AsyncElasticsearch

from catalog.engine import create_engine_client
from catalog.migrate import migrate
from devstack.stack import DevStack, StackUrls

TEMPLATE_DB = "hos_test_template"


def database_url_for(base_url: str, database: str) -> str:
    parts = urlsplit(base_url)
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def devstack() -> Iterator[DevStack]:
    stack = DevStack(os.environ)
    stack.start()
    try:
        yield stack
    finally:
        stack.close()


@pytest.fixture(scope="session")
def stack_urls(devstack: DevStack) -> StackUrls:
    assert devstack.urls is not None
    return devstack.urls


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def template_database(stack_urls: StackUrls) -> AsyncIterator[str]:
    """A migrated, empty database that each test's database is copied from."""
    admin = await asyncpg.connect(stack_urls.database_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {TEMPLATE_DB}")
        conn = await asyncpg.connect(database_url_for(stack_urls.database_url, TEMPLATE_DB))
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield TEMPLATE_DB
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)")
        await admin.close()


@pytest_asyncio.fixture(loop_scope="session")
async def database_url(stack_urls: StackUrls, template_database: str) -> AsyncIterator[str]:
    """A fresh, migrated database for this test only."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(stack_urls.database_url)
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template_database}")
        yield database_url_for(stack_urls.database_url, name)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest_asyncio.fixture(loop_scope="session")
async def empty_database_url(stack_urls: StackUrls) -> AsyncIterator[str]:
    """A fresh database with no schema at all (for migration tests)."""
    name = f"e_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(stack_urls.database_url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield database_url_for(stack_urls.database_url, name)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest_asyncio.fixture(loop_scope="session")
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()


@pytest_asyncio.fixture(loop_scope="session")
async def engine(stack_urls: StackUrls) -> AsyncIterator[AsyncElasticsearch]:
    client, _info = await create_engine_client(stack_urls.elasticsearch_node)
    try:
        yield client
    finally:
        await client.close()


@pytest_asyncio.fixture(loop_scope="session")
async def index_alias(engine: AsyncElasticsearch) -> AsyncIterator[str]:
    """A unique alias name for this test; every index behind it is deleted afterwards."""
    alias = f"t{uuid.uuid4().hex[:10]}_products"
    yield alias
    await engine.indices.delete(index=f"{alias}*", ignore_unavailable=True, allow_no_indices=True)


@pytest_asyncio.fixture(loop_scope="session")
async def redis_prefix(stack_urls: StackUrls) -> AsyncIterator[str]:
    """A unique key prefix for this test; its keys are deleted afterwards."""
    prefix = f"t{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = aioredis.from_url(stack_urls.redis_url)
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()
