"""Shared fixtures: one dev stack per test run, and per-test isolation inside it.

The stack is the embedded servers from ``devstack`` unless ``DATABASE_URL``, ``REDIS_URL`` or
``ELASTICSEARCH_NODE`` name real ones. Each test gets its own database (a copy of a migrated
template), its own index alias prefix and its own Redis key prefix, so tests cannot see each
other's data.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from elasticsearch import AsyncElasticsearch

from catalog.config import redact_url
from catalog.engine import create_engine_client
from catalog.migrate import migrate
from catalog.redis_client import RedisClient, open_redis
from devstack.databases import database_url_for
from devstack.opensearch import missing_java_tools
from devstack.stack import DevStack, StackUrls
from indexer.settings import IndexerSettings
from proxy.app import create_app
from proxy.settings import ProxySettings
from tests.indexer_support import indexer_settings

TEMPLATE_DB = "hos_test_template"


# What the run's summary says about the engine the shared stack used (pytest_terminal_summary).
ENGINE_USED = pytest.StashKey[str]()


def engine_used(stack: DevStack, env: Mapping[str, str]) -> str:
    """One line naming the engine of ``stack``: a real OpenSearch node, the imitation (and why), or
    the external one the environment names."""
    if env.get("ELASTICSEARCH_NODE"):
        return f"external engine at {redact_url(env['ELASTICSEARCH_NODE'])} (ELASTICSEARCH_NODE)"
    server = stack.servers.get("engine")
    version = server.version if server is not None else "?"
    if version.startswith("osmem"):
        missing = missing_java_tools(dict(env))
        why = f"{missing}; scripts/install-test-tools installs it where it can" if missing else "DEV_ENGINE=osmem"
        return f"{version} IMITATION, not Lucene: relevance and speed are not judged on it. Why: {why}"
    return f"{version} node (real Lucene, embedded)"


@pytest.fixture(scope="session")
def devstack(request: pytest.FixtureRequest) -> Iterator[DevStack]:
    stack = DevStack(os.environ)
    stack.start()
    request.config.stash[ENGINE_USED] = engine_used(stack, os.environ)
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
async def shop(db: asyncpg.Connection) -> asyncpg.Connection:
    """A connection to a catalog with two sellers (ids 1 and 2) and no product."""
    await db.execute("INSERT INTO sellers (id, name) VALUES (1, 'Acme'), (2, 'Bolt')")
    return db


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
async def redis(stack_urls: StackUrls) -> AsyncIterator[RedisClient]:
    """A client of the stack's Redis (one server, or a cluster with ``DEV_REDIS=cluster``)."""
    client = open_redis(stack_urls.redis_url, cluster=stack_urls.redis_cluster, max_connections=8)
    try:
        yield client
    finally:
        await client.aclose()


@pytest_asyncio.fixture(loop_scope="session")
async def redis_prefix(stack_urls: StackUrls) -> AsyncIterator[str]:
    """A unique key prefix for this test; its keys are deleted afterwards."""
    prefix = f"t{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = open_redis(stack_urls.redis_url, cluster=stack_urls.redis_cluster, max_connections=8)
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            await client.delete(key)
    finally:
        await client.aclose()


# --- a seeded, indexed catalog shared by the read-only search tests -------------------------

SEARCH_CATALOG_PRODUCTS = 3000
SEARCH_CATALOG_SEED = 7


class SearchCatalog:
    """A seeded database and an index alias holding exactly its active products."""

    def __init__(self, database_url: str, alias: str, index: str) -> None:
        self.database_url = database_url
        self.alias = alias
        self.index = index


async def load_index(
    conn: asyncpg.Connection, engine: AsyncElasticsearch, alias: str, *, shards: int = 1, replicas: int = 0
) -> str:
    """Build a versioned index behind ``alias`` from the active products in ``conn``'s database.

    Written here independently of the indexer, with the catalog's own document builder, so the
    search tests do not depend on the indexer being right.
    """
    from elasticsearch.helpers import async_bulk

    from catalog.document import PRODUCT_ROWS_SQL, is_searchable, product_document
    from catalog.mapping import index_mappings, index_settings, versioned_index_name

    index = versioned_index_name(alias)
    layout = index_settings(shards=shards, replicas=replicas)
    await engine.indices.create(index=index, settings=layout, mappings=index_mappings())
    rows = await conn.fetch(PRODUCT_ROWS_SQL + " ORDER BY p.id")
    actions = (
        {"_index": index, "_id": str(row["id"]), "_source": product_document(row)} for row in rows if is_searchable(row)
    )
    # A bulk with refresh can outlast the client's 5 s default on a shared, busy engine (ConnectionTimeout
    # in this fixture at a load average of 14-19); loading is set-up, not what a test measures.
    await async_bulk(engine.options(request_timeout=120), actions, chunk_size=1000, refresh=True)
    await engine.indices.update_aliases(actions=[{"add": {"index": index, "alias": alias}}])
    return index


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def search_catalog(stack_urls: StackUrls, template_database: str) -> AsyncIterator[SearchCatalog]:
    from catalog.seed import seed_catalog

    name = f"s_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(stack_urls.database_url)
    await admin.execute(f"CREATE DATABASE {name} TEMPLATE {template_database}")
    url = database_url_for(stack_urls.database_url, name)
    conn = await asyncpg.connect(url)
    # Set-up, not a test of speed: the bulk load with refresh=True outlasted the client's 5 s
    # default on a machine with a load average above 10, and every test of the file errored.
    client, _ = await create_engine_client(stack_urls.elasticsearch_node, request_timeout=60)
    alias = f"s{uuid.uuid4().hex[:10]}_products"
    try:
        await seed_catalog(conn, SEARCH_CATALOG_PRODUCTS, seed=SEARCH_CATALOG_SEED)
        index = await load_index(conn, client, alias)
        yield SearchCatalog(url, alias, index)
    finally:
        await client.indices.delete(index=f"{alias}*", ignore_unavailable=True, allow_no_indices=True)
        await client.close()
        await conn.close()
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


def proxy_settings(catalog: SearchCatalog, urls: StackUrls, **overrides: object) -> ProxySettings:
    """Proxy settings pointing at the shared search catalog, with generous timeouts."""
    base: dict[str, object] = {
        "elasticsearch_node": urls.elasticsearch_node,
        "search_index": catalog.alias,
        "database_url": catalog.database_url,
        "redis_url": urls.redis_url,
        "redis_cluster": urls.redis_cluster,
        "engine_timeout_ms": 10_000,
        "cors_origins": ("https://shop.example",),
        # Each proxy its own cache: answers cached by one test never reach another.
        "redis_key_prefix": f"t{uuid.uuid4().hex[:10]}:",
        # Tests send many requests from one address; the limiter's tests turn it on.
        "rate_limit_enabled": False,
    }
    base.update(overrides)
    return ProxySettings(**base)  # type: ignore[arg-type]


@pytest_asyncio.fixture(loop_scope="session")
async def proxy_client(search_catalog: SearchCatalog, stack_urls: StackUrls) -> AsyncIterator[TestClient]:
    """An in-process proxy (real aiohttp server on loopback) over the shared search catalog."""
    async with TestClient(TestServer(create_app(proxy_settings(search_catalog, stack_urls)))) as client:
        yield client


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    """Say loudly which engine the run used and every skip with its reason: a plain run used to
    fall back to the imitation engine, or skip whole files, without a word (issue 20)."""
    write = terminalreporter.write_line
    terminalreporter.section("hos-search: what this run used")
    used = config.stash.get(ENGINE_USED, "")
    if not used:
        write("engine: none started (no test here needed the shared stack)")
    else:
        write(f"engine: {used}", red="IMITATION" in used, bold=True)
    reasons: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        where, _line, reason = report.longrepr if isinstance(report.longrepr, tuple) else ("?", 0, str(report.longrepr))
        reasons[f"{reason.removeprefix('Skipped: ')}  [{Path(where).name}]"] += 1
    if not reasons:
        write("skipped: nothing", green=True)
        return
    write(
        f"skipped: {sum(reasons.values())} tests — each is NOT a pass; scripts/install-test-tools names the fix",
        yellow=True,
        bold=True,
    )
    for reason, count in reasons.most_common():
        write(f"  {count:3d} × {reason}", yellow=True)


@pytest.fixture
def settings(stack_urls: StackUrls, database_url: str, index_alias: str, redis_prefix: str) -> IndexerSettings:
    """An indexer's settings for this test's own database, alias and Redis prefix (a test file
    may define its own ``settings`` instead)."""
    return indexer_settings(stack_urls, database_url, index_alias, redis_prefix)
