"""No secret ever appears in a log line, an error body, a response header or a metric.

The secrets are the passwords in ``DATABASE_URL``, ``REDIS_URL`` and ``ELASTICSEARCH_NODE`` and
an API key of ``RATE_LIMIT_KEYS``. Each test makes the servers fail for real — the engine cut
off, Postgres on a dead port, Redis refusing the password — so that errors are logged and
answered, then reads everything the proxy said: its log (``caplog``, and a real process's
stderr at debug level with the access log on), every body and header, ``/readyz`` and
``/metrics``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from catalog.config import ConfigError
from catalog.connections import ServerUnreachable, connect_postgres
from devstack.servers import free_port
from devstack.stack import StackUrls
from proxy.app import create_app
from proxy.ratelimit.identity import KeyLimit
from proxy.settings import ProxySettings
from tests.conftest import SearchCatalog, proxy_settings
from tests.indexer_support import TcpProxy
from tests.proxy_support import ROOT, proxy_env, spawn_proxy, wait_healthy

PG_PASSWORD = "pg-Secret-7c1e90"
REDIS_PASSWORD = "redis-Secret-91bd44"
ES_PASSWORD = "es-Secret-44aa07"
API_KEY = "partner-Secret-Key-5f0c2d"
SECRETS = (
    PG_PASSWORD,
    REDIS_PASSWORD,
    ES_PASSWORD,
    API_KEY,
    # The engine's password travels as a Basic authorization header: not that either.
    base64.b64encode(f"elastic:{ES_PASSWORD}".encode()).decode(),
)


def _with_password(url: str, user: str, password: str) -> str:
    """``scheme://host…`` -> ``scheme://user:password@host…`` (the servers here trust any password)."""
    scheme, _, rest = url.partition("://")
    rest = rest.split("@", 1)[-1]
    return f"{scheme}://{user}:{password}@{rest}"


def _assert_no_secret(where: str, texts: Iterable[str]) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text, f"a secret in {where}: …{text[max(0, text.find(secret) - 200) :][:400]}…"


async def _everything(session: aiohttp.ClientSession, base: str, path: str, **headers: str) -> tuple[int, str]:
    """Status, and the body and every header of the answer as one text."""
    async with session.get(base + path, headers=headers) as response:
        body = await response.text()
        return response.status, body + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items())


async def test_failing_servers_leak_no_secret_into_logs_bodies_or_metrics(
    search_catalog: SearchCatalog, stack_urls: StackUrls, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    engine = TcpProxy(stack_urls.elasticsearch_node)
    await engine.open()
    settings = proxy_settings(
        search_catalog,
        stack_urls,
        elasticsearch_node=_with_password(engine.url, "elastic", ES_PASSWORD),
        # Postgres on a dead port: the fallback and /readyz fail on it.
        database_url=f"postgresql://search:{PG_PASSWORD}@127.0.0.1:{free_port()}/hos_search",
        # Redis knows no such user: the cache and the limiter fall back.
        redis_url=_with_password(stack_urls.redis_url, "search", REDIS_PASSWORD),
        rate_limit_enabled=True,
        rate_limit_keys={API_KEY: KeyLimit(3, 3_600_000)},
        engine_timeout_ms=1_000,
        engine_breaker_failures=2,
    )
    said: list[str] = []
    try:
        async with TestClient(TestServer(create_app(settings))) as client:
            base = str(client.make_url(""))
            async with aiohttp.ClientSession() as session:
                status, text = await _everything(session, base, "/api/search?q=wand", **{"X-API-Key": API_KEY})
                assert status == 200, text  # the engine answers, through its password
                said.append(text)
                await engine.close()  # the engine goes away: searches fall back to a dead Postgres
                statuses = []
                for path in ("/api/search?q=cloak", "/api/search/suggestions?q=harr", "/api/products/7"):
                    status, text = await _everything(session, base, path, **{"X-API-Key": API_KEY})
                    statuses.append(status)
                    said.append(text)
                assert statuses == [503, 503, 429], said  # the key's third token was its last
                for path, headers in (
                    ("/api/search?size=0", {}),
                    ("/api/search?q=x", {"X-API-Key": API_KEY[:-1] + "X"}),
                    ("/readyz", {}),
                    ("/metrics", {}),
                ):
                    status, text = await _everything(session, base, path, **headers)
                    said.append(text)
                assert "Secret" not in said[-2] and '"postgres":{"ok":false' in said[-2]
    finally:
        await engine.close()
    logged = caplog.text
    _assert_no_secret("a response", said)
    _assert_no_secret("the log", [logged, *(repr(record.args) for record in caplog.records)])
    # The failures were logged, naming what failed without its password.
    assert "fallback query failed" in logged
    assert f"elastic:***@127.0.0.1:{engine.port}" in logged


async def test_a_proxy_process_at_debug_level_leaks_no_secret(
    search_catalog: SearchCatalog, stack_urls: StackUrls
) -> None:
    engine = TcpProxy(stack_urls.elasticsearch_node)
    await engine.open()
    env = proxy_env(
        search_catalog,
        stack_urls,
        ELASTICSEARCH_NODE=_with_password(engine.url, "elastic", ES_PASSWORD),
        # The real catalog, named with a password (the dev server trusts any): the fallback works.
        DATABASE_URL=_with_password(search_catalog.database_url, "postgres", PG_PASSWORD),
        REDIS_URL=_with_password(stack_urls.redis_url, "search", REDIS_PASSWORD),
        RATE_LIMIT_ENABLED="true",
        RATE_LIMIT_KEYS=f"{API_KEY} 1000 60000",
        ENGINE_TIMEOUT_MS="1000",
        LOG_LEVEL="debug",
        ACCESS_LOG="true",
    )
    proc, url = spawn_proxy(env, workers=2)
    said: list[str] = []
    try:
        await wait_healthy(url, proc)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            for _ in range(4):  # both workers
                status, text = await _everything(session, url, "/api/search?q=wand", **{"X-API-Key": API_KEY})
                assert status == 200, text
                said.append(text)
            await engine.close()
            for path in ("/api/search?q=dragon", "/api/products/7", "/api/search?size=0", "/readyz", "/metrics"):
                said.append((await _everything(session, url, path, **{"X-API-Key": API_KEY}))[1])
            assert "X-Search-Backend: postgres" in said[-5]
    finally:
        await engine.close()
        proc.terminate()
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=30)
    assert "GET /api/search" in stderr  # the access log was on
    assert "AuthenticationError" in stderr or "ResponseError" in stderr, stderr[-2000:]  # Redis refused
    _assert_no_secret("a response", said)
    _assert_no_secret("the proxy's stderr", [stderr])


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", f"postgresql://search:{PG_PASSWORD}@db.internal:notaport/hos"),
        ("DATABASE_URL", f"mysql://search:{PG_PASSWORD}@db.internal/hos"),
        ("DATABASE_URL", f"postgresql://search:{PG_PASSWORD}@/hos"),
        ("REDIS_URL", f"http://:{REDIS_PASSWORD}@cache.internal:6379"),
        ("REDIS_URL", f"redis://:{REDIS_PASSWORD}@cache.internal:99999"),
        ("ELASTICSEARCH_NODE", f"ftp://elastic:{ES_PASSWORD}@search.internal"),
        ("DATABASE_URL", f"postgresql://search:{PG_PASSWORD}@[::1/hos"),
        ("RATE_LIMIT_KEYS", f"{API_KEY} many 60000"),
    ],
)
def test_a_bad_setting_is_named_without_its_secret(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name) as refused:
        ProxySettings.from_env({name: value})
    _assert_no_secret(f"the error for {name}", [str(refused.value)])


async def test_an_unreachable_postgres_is_named_without_its_password_parameter(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # libpq's query form: catalog/connections.py had a redaction of its own that missed it, and
    # printed the password in every "cannot connect" error and retry warning.
    url = f"postgresql://search@127.0.0.1:{free_port()}/hos?sslmode=disable&password={PG_PASSWORD}"
    with caplog.at_level(logging.WARNING), pytest.raises(ServerUnreachable, match="DATABASE_URL") as refused:
        await connect_postgres(url, attempts=2, timeout=2.0)
    assert "password=***" in str(refused.value)
    assert any("retrying" in record.getMessage() for record in caplog.records)
    _assert_no_secret("the error and the retry warning", [str(refused.value), caplog.text])


def test_the_command_line_prints_a_bad_url_without_its_password(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": f"postgresql://search:{PG_PASSWORD}@db.internal:nope/hos"}
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "DATABASE_URL" in done.stderr and "search:***@db.internal" in done.stderr
    _assert_no_secret("the command's output", [done.stdout, done.stderr])


async def test_an_api_key_is_never_stored_in_redis(
    search_catalog: SearchCatalog, stack_urls: StackUrls, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = proxy_settings(
        search_catalog,
        stack_urls,
        redis_key_prefix=redis_prefix,
        rate_limit_enabled=True,
        rate_limit_keys={API_KEY: KeyLimit(100, 60_000)},
    )
    async with TestClient(TestServer(create_app(settings))) as client:
        for _ in range(3):
            response = await client.get("/api/search?q=wand", headers={"X-API-Key": API_KEY})
            assert response.status == 200
    redis = aioredis.from_url(stack_urls.redis_url)
    try:
        stored = [key async for key in redis.scan_iter(match=f"{redis_prefix}*")]
        assert any(b"key:" in key for key in stored), stored  # the key's bucket, by its hash
        values = [await redis.dump(key) or b"" for key in stored]
    finally:
        await redis.aclose()
    _assert_no_secret("Redis", [repr(stored), repr(values), caplog.text])
