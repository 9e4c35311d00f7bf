"""A secured engine: TLS with a private CA, an API key or a user and password.

The "secured Elasticsearch" is a TLS front on loopback (aiohttp with a throwaway CA made by
``trustme``) that refuses any request without the right ``Authorization`` header, as
Elasticsearch does with a 401, and forwards the rest to the dev stack's engine. Through it: the
client factory, the proxy (searches and ``/readyz``), the indexer and a reindex work; a wrong
key, a wrong password or a CA that did not sign the certificate stop the proxy and the indexer
at start with one line naming the setting (exit 2), and no secret reaches a log, an error or
``/readyz``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import ssl
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
import trustme
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from catalog.config import EngineAccess
from catalog.engine import EngineAccessRefused, create_engine_client
from catalog.seed import seed_catalog
from devstack.servers import free_port
from devstack.stack import StackUrls
from indexer.service import run_reindex
from proxy.app import create_app
from tests.conftest import SearchCatalog, proxy_settings
from tests.indexer_support import active_products, indexed_catalog, indexer_settings
from tests.proxy_support import ROOT

API_KEY = "a2V5LWlkOmtleS1TZWNyZXQtMzNmMQ=="  # what Elasticsearch hands out: base64 of id:key
USERNAME = "search_service"
PASSWORD = "pw-Secret-8d21c4"
SECRETS = (API_KEY, PASSWORD, base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode())


@dataclass
class SecuredEngine:
    url: str
    ca_file: str
    other_ca_file: str  # a CA that did not sign the front's certificate
    authorizations: list[str] = field(default_factory=list)  # what each request carried

    def access(self, **overrides: str) -> EngineAccess:
        return replace(EngineAccess(api_key=API_KEY, ca_certs=self.ca_file), **overrides)  # type: ignore[arg-type]


def _accepted(authorization: str) -> bool:
    basic = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    return authorization in (f"ApiKey {API_KEY}", f"Basic {basic}")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def secured(stack_urls: StackUrls, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SecuredEngine]:
    workdir = tmp_path_factory.mktemp("tls")
    ca, other_ca = trustme.CA(), trustme.CA()
    ca.cert_pem.write_to_path(str(workdir / "ca.pem"))
    other_ca.cert_pem.write_to_path(str(workdir / "other-ca.pem"))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    upstream = stack_urls.elasticsearch_node.split(",")[0]
    port = free_port()
    engine = SecuredEngine(f"https://127.0.0.1:{port}", str(workdir / "ca.pem"), str(workdir / "other-ca.pem"))
    session = aiohttp.ClientSession()

    async def forward(request: web.Request) -> web.Response:
        authorization = request.headers.get("Authorization", "")
        engine.authorizations.append(authorization)
        if not _accepted(authorization):
            return web.json_response(
                {"error": {"type": "security_exception", "reason": "unable to authenticate"}, "status": 401},
                status=401,
                headers={"WWW-Authenticate": 'ApiKey, Basic realm="security"'},
            )
        headers = {name: value for name, value in request.headers.items() if name.lower() in ("content-type", "accept")}
        async with session.request(
            request.method, upstream + request.path_qs, data=await request.read(), headers=headers
        ) as answer:
            body = await answer.read()
            kept = {"Content-Type": answer.headers.get("Content-Type", "application/json")}
            return web.Response(status=answer.status, body=body, headers=kept)

    app = web.Application(client_max_size=64 * 1024**2)
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_context).start()
    try:
        yield engine
    finally:
        await runner.cleanup()
        await session.close()


async def test_the_client_signs_in_with_an_api_key_and_verifies_the_certificate(secured: SecuredEngine) -> None:
    before = len(secured.authorizations)
    client, info = await create_engine_client(secured.url, access=secured.access())
    try:
        assert (await client.cluster.health())["status"] in ("green", "yellow")
    finally:
        await client.close()
    assert info.distribution == "opensearch"
    assert set(secured.authorizations[before:]) == {f"ApiKey {API_KEY}"}


async def test_the_client_signs_in_with_a_user_and_password(secured: SecuredEngine) -> None:
    access = secured.access(api_key="", username=USERNAME, password=PASSWORD)
    client, _ = await create_engine_client(secured.url, access=access)
    try:
        assert (await client.info())["version"]["number"]
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"api_key": "d3Jvbmc6a2V5"}, "ELASTICSEARCH_API_KEY"),
        ({"api_key": "", "username": USERNAME, "password": "not-the-password"}, "ELASTICSEARCH_USERNAME/"),
        ({"api_key": ""}, "ELASTICSEARCH_API_KEY (or"),
        ("other_ca", "ELASTICSEARCH_CA_CERTS"),
        ({"ca_certs": ""}, "ELASTICSEARCH_CA_CERTS"),
    ],
)
async def test_a_refused_credential_or_certificate_names_its_setting_and_no_secret(
    secured: SecuredEngine, overrides: dict[str, str] | str, named: str
) -> None:
    access = secured.access(ca_certs=secured.other_ca_file) if overrides == "other_ca" else secured.access(**overrides)  # type: ignore[arg-type]
    with pytest.raises(EngineAccessRefused) as refused:
        await create_engine_client(secured.url, access=access)
    message = str(refused.value)
    assert message.startswith(named) and "\n" not in message
    assert not any(secret in message for secret in SECRETS)


async def test_the_proxy_searches_and_reports_ready_through_the_secured_engine(
    secured: SecuredEngine,
    search_catalog: SearchCatalog,
    stack_urls: StackUrls,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = proxy_settings(
        search_catalog, stack_urls, elasticsearch_node=secured.url, engine_access=secured.access(), cache_enabled=False
    )
    async with TestClient(TestServer(create_app(settings))) as client:
        search = await client.get("/api/search?q=wand")
        assert search.status == 200 and search.headers["X-Search-Backend"] == "elasticsearch"
        assert (await search.json())["total"] > 0
        ready = await client.get("/readyz")
        assert ready.status == 200 and (await ready.json())["checks"]["elasticsearch"]["ok"] is True
        metrics = await client.get("/metrics")
        said = [await ready.text(), await metrics.text(), caplog.text]
    assert not any(secret in text for secret in SECRETS for text in said)


async def test_a_reindex_runs_through_the_secured_engine(
    secured: SecuredEngine, stack_urls: StackUrls, database_url: str, redis_prefix: str
) -> None:
    alias = f"sec{uuid.uuid4().hex[:8]}_products"
    conn = await asyncpg.connect(database_url)
    try:
        await seed_catalog(conn, 200, seed=9)
        settings = indexer_settings(stack_urls, database_url, alias, redis_prefix)
        settings = replace(settings, elasticsearch_node=secured.url, engine_access=secured.access())
        result = await run_reindex(settings, asyncio.Event())
        assert result.documents == len(await active_products(conn))
        client, _ = await create_engine_client(secured.url, access=secured.access())
        try:
            assert await indexed_catalog(client, alias) == await active_products(conn)
        finally:
            await client.indices.delete(index=f"{alias}*", ignore_unavailable=True, allow_no_indices=True)
            await client.close()
    finally:
        await conn.close()


async def _run(module: str, env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


@pytest.mark.parametrize("module", ["indexer", "proxy"])
@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ELASTICSEARCH_API_KEY": "d3Jvbmc6a2V5"}, "ELASTICSEARCH_API_KEY"),
        ({"ELASTICSEARCH_USERNAME": USERNAME, "ELASTICSEARCH_PASSWORD": "wrong-pw"}, "ELASTICSEARCH_USERNAME"),
        ({"ELASTICSEARCH_API_KEY": API_KEY, "ELASTICSEARCH_CA_CERTS": "other"}, "ELASTICSEARCH_CA_CERTS"),
    ],
)
async def test_a_service_with_a_refused_credential_stops_at_start_with_one_line(
    secured: SecuredEngine, stack_urls: StackUrls, module: str, env: dict[str, str], named: str
) -> None:
    ca = secured.other_ca_file if env.get("ELASTICSEARCH_CA_CERTS") == "other" else secured.ca_file
    full = {
        **os.environ,
        **stack_urls.as_env(),
        "ELASTICSEARCH_NODE": secured.url,
        "INDEXER_METRICS_PORT": "0",
        "LOG_LEVEL": "debug",
        **env,
        "ELASTICSEARCH_CA_CERTS": ca,
    }
    args = ("--port", str(free_port()), "--workers", "1") if module == "proxy" else ()
    code, stderr = await _run(module, full, *args)
    assert code == 2, stderr
    last = stderr.strip().splitlines()[-1]
    assert named in last and "Traceback" not in stderr
    assert not any(secret in stderr for secret in SECRETS)
