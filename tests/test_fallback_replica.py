"""The Postgres fallback on a real streaming replica (``FALLBACK_DATABASE_URL``): it reads there
and only there, and refuses quickly (503, ``Retry-After``) while the replica lags
or is gone — the engine path untouched.

Each test gets a replica of the session's Postgres (``pg_basebackup -R`` from the embedded
binaries, ``devstack.servers.start_postgres_replica``); the engine is made to refuse by pointing
the proxy at a closed port, so that searches go to the fallback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from devstack.databases import database_url_for
from devstack.servers import ServerProcess, free_port, start_postgres_replica
from devstack.stack import StackUrls
from proxy.app import create_app
from proxy.fallback.postgres import APPLICATION_NAME
from tests.conftest import SearchCatalog, proxy_settings
from tests.indexer_support import eventually
from tests.proxy_support import timed_get

SEARCH = "/api/search?q=harry+potter&size=5"
MAX_LAG_MS = 500


@pytest.fixture
def replica(stack_urls: StackUrls, tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_postgres_replica(stack_urls.database_url, tmp_path / "replica")
    try:
        yield server
    finally:
        server.stop()


def _replica_url(replica: ServerProcess, catalog: SearchCatalog) -> str:
    return database_url_for(replica.url, urlsplit(catalog.database_url).path.lstrip("/"))


async def _caught_up(replica_url: str) -> None:
    """Until the replica holds the catalog (it was copied before, or streams it since)."""

    async def holds_products() -> bool:
        try:
            conn = await asyncpg.connect(replica_url, timeout=2)
        except (OSError, asyncpg.PostgresError):
            return False
        try:
            return bool(await conn.fetchval("SELECT count(*) FROM products"))
        finally:
            await conn.close()

    await eventually(holds_products, timeout=30, what="the replica holding the catalog")


def _settings(catalog: SearchCatalog, urls: StackUrls, replica_url: str, **overrides: Any) -> Any:
    base: dict[str, Any] = {
        "elasticsearch_node": f"http://127.0.0.1:{free_port()}",  # refused: the fallback answers
        "engine_timeout_ms": 1_000,
        "cache_enabled": False,  # every answer from a backend
        "fallback_database_url": replica_url,
        "fallback_max_lag_ms": MAX_LAG_MS,
    }
    return proxy_settings(catalog, urls, **{**base, **overrides})


@pytest_asyncio.fixture(loop_scope="session")
async def on_replica(
    search_catalog: SearchCatalog, stack_urls: StackUrls, replica: ServerProcess
) -> AsyncIterator[TestClient]:
    replica_url = _replica_url(replica, search_catalog)
    await _caught_up(replica_url)
    async with TestClient(TestServer(create_app(_settings(search_catalog, stack_urls, replica_url)))) as client:
        yield client


async def _fallback_connections(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", APPLICATION_NAME)
        )
    finally:
        await conn.close()


async def _engine_path_untouched(catalog: SearchCatalog, urls: StackUrls, replica: ServerProcess) -> None:
    """A proxy with the same replica settings whose engine answers serves searches from the engine."""
    engine = {"elasticsearch_node": urls.elasticsearch_node, "engine_timeout_ms": 10_000}  # a busy machine
    settings = _settings(catalog, urls, _replica_url(replica, catalog), **engine)
    async with TestClient(TestServer(create_app(settings))) as client:
        status, headers, _, _ = await timed_get(client, SEARCH)
        assert status == 200 and headers["X-Search-Backend"] == "elasticsearch"


async def test_the_fallback_reads_from_the_replica_only(
    on_replica: TestClient, search_catalog: SearchCatalog, replica: ServerProcess
) -> None:
    primary_before = await _fallback_connections(search_catalog.database_url)
    status, headers, body, _ = await timed_get(on_replica, SEARCH)
    assert status == 200 and headers["X-Search-Backend"] == "postgres", body
    assert body["items"]
    assert await _fallback_connections(replica.url) >= 1
    assert await _fallback_connections(search_catalog.database_url) == primary_before
    status, _, ready, _ = await timed_get(on_replica, "/readyz")
    assert status == 200 and ready["backend"] == "postgres"
    assert ready["checks"]["fallback"] == {"ok": True, "detail": "ok"}


async def test_a_lagging_replica_is_refused_at_once_with_a_503_and_serves_again_once_it_catches_up(
    on_replica: TestClient, search_catalog: SearchCatalog, stack_urls: StackUrls, replica: ServerProcess
) -> None:
    status, headers, _, _ = await timed_get(on_replica, SEARCH)
    assert status == 200 and headers["X-Search-Backend"] == "postgres"
    replica_admin = await asyncpg.connect(replica.url)
    primary = await asyncpg.connect(stack_urls.database_url)
    try:
        await replica_admin.execute("SELECT pg_wal_replay_pause()")
        await primary.execute("CREATE TABLE IF NOT EXISTS lag_probe (at timestamptz)")

        async def refused() -> tuple[int, dict[str, str], float] | None:
            await primary.execute("INSERT INTO lag_probe VALUES (now())")  # WAL the replica does not replay
            status, headers, _, seconds = await timed_get(on_replica, SEARCH)
            return (status, headers, seconds) if status == 503 else None

        status, headers, seconds = await eventually(refused, timeout=20, what="the lagging replica refused")
        assert headers["Retry-After"] and headers["Content-Type"].startswith("application/problem+json")
        assert seconds < 0.5, seconds  # refused without asking the replica
        status, _, ready, _ = await timed_get(on_replica, "/readyz")
        assert status == 503 and ready["checks"]["fallback"]["ok"] is False, ready
        assert "behind" in ready["checks"]["fallback"]["detail"]

        # The engine path is untouched: a proxy whose engine answers serves from it.
        await _engine_path_untouched(search_catalog, stack_urls, replica)

        await replica_admin.execute("SELECT pg_wal_replay_resume()")

        async def served() -> bool:
            status, _, _, _ = await timed_get(on_replica, SEARCH)
            return status == 200

        await eventually(served, timeout=20, what="the fallback serving again")
    finally:
        await primary.execute("DROP TABLE IF EXISTS lag_probe")
        await primary.close()
        await replica_admin.close()


async def test_a_replica_that_dies_is_refused_quickly_and_the_engine_path_is_untouched(
    on_replica: TestClient, search_catalog: SearchCatalog, stack_urls: StackUrls, replica: ServerProcess
) -> None:
    status, _, _, _ = await timed_get(on_replica, SEARCH)
    assert status == 200
    replica.process.kill()
    replica.process.wait(10)
    timings = []
    for _ in range(5):
        status, headers, body, seconds = await timed_get(on_replica, SEARCH)
        assert status == 503 and headers["Retry-After"], body
        timings.append(seconds)
    assert max(timings) < 1.0, timings  # engine refused at once, replica refused at once
    status, _, ready, _ = await timed_get(on_replica, "/readyz")
    assert status == 503 and ready["checks"]["fallback"]["ok"] is False
    await _engine_path_untouched(search_catalog, stack_urls, replica)
