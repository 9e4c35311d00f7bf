"""The Postgres fallback on a real streaming replica (``FALLBACK_DATABASE_URL``): it reads there
and only there, and refuses quickly (503, ``Retry-After``) while the replica lags
or is gone — the engine path untouched.

Each test gets a replica of the session's Postgres (``pg_basebackup -R`` from the embedded
binaries, ``devstack.servers.start_postgres_replica``); the engine is made to refuse by pointing
the proxy at a closed port, so that searches go to the fallback.
"""

from __future__ import annotations

import contextlib
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


@contextlib.asynccontextmanager
async def _lag_probe(replica: ServerProcess, urls: StackUrls) -> AsyncIterator[tuple[Any, Any]]:
    """(the primary, the replica) connections, and a table on the primary to write WAL into."""
    replica_admin = await asyncpg.connect(replica.url)
    primary = await asyncpg.connect(urls.database_url)
    try:
        await primary.execute("CREATE TABLE IF NOT EXISTS lag_probe (at timestamptz)")
        yield primary, replica_admin
    finally:
        await primary.execute("DROP TABLE IF EXISTS lag_probe")
        await primary.close()
        await replica_admin.close()


async def _served_again(client: TestClient, what: str) -> None:
    async def served() -> bool:
        status, _, _, _ = await timed_get(client, SEARCH)
        return status == 200

    await eventually(served, timeout=30, what=what)


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
    async with _lag_probe(replica, stack_urls) as (primary, replica_admin):
        await replica_admin.execute("SELECT pg_wal_replay_pause()")

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
        await _served_again(on_replica, "the fallback serving again")


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


async def test_a_replica_cut_off_from_its_primary_is_refused_once_its_last_replay_is_too_old(
    on_replica: TestClient, stack_urls: StackUrls, replica: ServerProcess
) -> None:
    """A replica that cannot reach its primary has replayed all it received: it read 0 lag and
    served an ever older catalog while the primary went on committing (session 8's leftover)."""
    status, headers, _, _ = await timed_get(on_replica, SEARCH)
    assert status == 200 and headers["X-Search-Backend"] == "postgres"
    async with _lag_probe(replica, stack_urls) as (primary, replica_admin):
        conninfo = await replica_admin.fetchval("SHOW primary_conninfo")
        assert conninfo  # it streams from the primary to begin with (pg_basebackup -R)
        # Its WAL receiver now dials a closed port: the replica is cut off, the primary is not.
        await replica_admin.execute(f"ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port={free_port()}'")
        await replica_admin.execute("SELECT pg_reload_conf()")

        async def refused() -> dict[str, Any] | None:
            await primary.execute("INSERT INTO lag_probe VALUES (now())")  # WAL it never receives
            status, _, ready, _ = await timed_get(on_replica, "/readyz")
            return ready if status == 503 else None

        ready = await eventually(refused, timeout=30, what="the cut-off replica refused")
        assert "behind" in ready["checks"]["fallback"]["detail"], ready
        status, headers, _, _ = await timed_get(on_replica, SEARCH)
        assert status == 503 and headers["Retry-After"]

        # pg_basebackup -R wrote the first conninfo where ALTER SYSTEM writes: set it back.
        restore = "SELECT format('ALTER SYSTEM SET primary_conninfo = %L', $1::text)"
        await replica_admin.execute(await replica_admin.fetchval(restore, conninfo))
        await replica_admin.execute("SELECT pg_reload_conf()")
        await _served_again(on_replica, "the fallback serving again once the replica streams")
