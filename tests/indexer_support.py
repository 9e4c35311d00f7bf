"""Helpers shared by the indexer tests: settings for one test, an in-process indexer, an indexer
process, polling, catalog writes, and a closable TCP proxy to cut the engine off without touching the shared
engine process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import asyncpg
from aiohttp import web
from elasticsearch import AsyncElasticsearch

from devstack.catalogs import scratch_indexer_settings
from devstack.stack import StackUrls
from indexer.metrics import IndexerMetrics
from indexer.service import run_indexer
from indexer.settings import IndexerSettings

T = TypeVar("T")


def indexer_settings(
    stack_urls: StackUrls, database_url: str, alias: str, redis_prefix: str, **overrides: Any
) -> IndexerSettings:
    # A scratch catalog's settings (as the benches' and the load runner's), with a test's short waits.
    base = scratch_indexer_settings(stack_urls, database_url, alias, redis_prefix)
    waits: dict[str, Any] = {"linger_ms": 20, "keepalive_s": 1.0, "bulk_timeout_s": 5.0, "prune_interval_s": 0.5}
    return replace(base, **(waits | overrides))


def settings_env(settings: IndexerSettings) -> dict[str, str]:
    """The environment a ``python -m indexer`` child needs to run with ``settings``."""
    return {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "REDIS_CLUSTER": str(settings.redis_cluster).lower(),
        "REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "ELASTICSEARCH_NODE": settings.elasticsearch_node,
        "SEARCH_INDEX": settings.search_index,
        "INDEXER_METRICS_PORT": str(settings.metrics_port),
        "SEARCH_INDEX_REPLICAS": str(settings.index_replicas),
        "INDEXER_LINGER_MS": str(settings.linger_ms),
        "INDEXER_KEEPALIVE_S": str(settings.keepalive_s),
        "INDEXER_BATCH_SIZE": str(settings.batch_size),
    }


ROOT = Path(__file__).resolve().parent.parent


def spawn_indexer(env: Mapping[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    """``python -m indexer *args`` with ``env`` over this process's environment (``LOG_LEVEL``
    info unless ``env`` says otherwise), stdout and stderr appended to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "indexer", *args],
            cwd=ROOT,
            env={**os.environ, "LOG_LEVEL": "info", **env},
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )


async def eventually(check: Callable[[], Awaitable[T | None]], *, timeout: float = 30.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = await check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout:.0f}s (last: {last!r})")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_indexer(
    settings: IndexerSettings, *, reindex_on_start: bool = False, metrics: IndexerMetrics | None = None
) -> AsyncIterator[IndexerMetrics]:
    """The streaming indexer as a task of this event loop, stopped (and checked) on exit."""
    metrics = metrics or IndexerMetrics()
    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.ensure_future(
        run_indexer(settings, stop, reindex_on_start=reindex_on_start, metrics=metrics, ready=ready)
    )
    try:
        waiter = asyncio.ensure_future(ready.wait())
        await asyncio.wait({task, waiter}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done():
            task.result()  # raise what it died of
        assert ready.is_set(), "indexer did not start within 60s"
        yield metrics
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 30)
        except BaseException:
            task.cancel()
            raise


# --- catalog writes ------------------------------------------------------------------------


async def add_seller(db: asyncpg.Connection, name: str = "Ollivanders") -> int:
    return int(await db.fetchval("INSERT INTO sellers (name) VALUES ($1) RETURNING id", name))


async def add_product(
    db: asyncpg.Connection,
    seller_id: int,
    name: str = "Elder Wand",
    *,
    price: float = 29.99,
    status: str = "active",
) -> int:
    return int(
        await db.fetchval(
            """INSERT INTO products (seller_id, name, category, fandom, price, stock, status)
               VALUES ($1, $2, 'props', 'Harry Potter', $3, 3, $4) RETURNING id""",
            seller_id,
            name,
            price,
            status,
        )
    )


async def add_products(db: asyncpg.Connection, seller_id: int, count: int, *, prefix: str = "Item") -> list[int]:
    rows = await db.fetch(
        """INSERT INTO products (seller_id, name, category, fandom, price, stock, status)
           SELECT $1, $2 || ' ' || g, 'props', 'Harry Potter', 10 + g % 90, 1, 'active'
             FROM generate_series(1, $3) AS g
           RETURNING id""",
        seller_id,
        prefix,
        count,
    )
    return [int(r["id"]) for r in rows]


# --- reading the index ---------------------------------------------------------------------


async def indexed(engine: AsyncElasticsearch, alias: str, product_id: int) -> dict[str, Any] | None:
    """The indexed document of ``product_id`` (real-time get), or ``None``."""
    response = await engine.options(ignore_status=404).get(index=alias, id=str(product_id))
    if response.meta.status == 404 or not response.body.get("found"):
        return None
    return dict(response.body["_source"])


async def searchable(engine: AsyncElasticsearch, alias: str, product_id: int) -> bool:
    """Whether a search finds ``product_id`` — after the engine's refresh, unlike :func:`indexed`'s
    real-time get; poll it with :func:`eventually`."""
    response = await engine.options(ignore_status=404).search(
        index=alias, size=1, source=False, query={"ids": {"values": [str(product_id)]}}
    )
    return response.meta.status == 200 and bool(response.body["hits"]["hits"])


async def indexed_ids(engine: AsyncElasticsearch, alias: str) -> set[int]:
    await engine.options(ignore_status=404).indices.refresh(index=alias)
    response = await engine.search(index=alias, size=10_000, source=False, query={"match_all": {}})
    return {int(hit["_id"]) for hit in response["hits"]["hits"]}


async def active_products(db: asyncpg.Connection) -> dict[int, dict[str, Any]]:
    """What the index must hold: id -> (name, price, seller name) of every active product."""
    rows = await db.fetch(
        """SELECT p.id, p.name, p.price::float8 AS price, s.name AS seller
             FROM products p JOIN sellers s ON s.id = p.seller_id WHERE p.status = 'active'"""
    )
    return {int(r["id"]): {"name": r["name"], "price": r["price"], "seller": r["seller"]} for r in rows}


async def indexed_catalog(engine: AsyncElasticsearch, alias: str) -> dict[int, dict[str, Any]] | None:
    """Every document behind ``alias`` as {product id: name/price/seller}; None if there is no index."""
    await engine.options(ignore_status=404).indices.refresh(index=alias)
    response = await engine.options(ignore_status=404).search(
        index=alias, size=10_000, source_includes=["name", "price", "seller.name"], query={"match_all": {}}
    )
    if response.meta.status == 404:
        return None
    return {
        int(hit["_id"]): {
            "name": hit["_source"]["name"],
            "price": hit["_source"]["price"],
            "seller": hit["_source"]["seller"]["name"],
        }
        for hit in response["hits"]["hits"]
    }


async def index_matches_catalog(engine: AsyncElasticsearch, alias: str, db: asyncpg.Connection) -> bool:
    """Whether the index holds exactly the active products, with their current name/price/seller."""
    expected = await active_products(db)
    return await indexed_catalog(engine, alias) == expected


# --- cutting the engine off ----------------------------------------------------------------


class TcpProxy:
    """A loopback TCP forwarder that can be closed (connections refused and cut) and reopened.

    It lets a test make the engine unreachable for one indexer without pausing the engine
    process that the whole test session shares. :attr:`hanging` makes it a black hole instead:
    connections stay open and accepted, but nothing sent through them arrives (an engine that
    hangs).
    """

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        self.hanging = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        if server is not None:
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, upstream: bool) -> None:
            try:
                while data := await src.read(65536):
                    if upstream and self.hanging:
                        continue  # swallowed: the request never arrives, no answer ever comes
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
        self._writers.difference_update((writer, up_writer))


# Hop-by-hop, or recomputed by aiohttp for the body it sends (an answer is passed back
# decompressed).
_NOT_FORWARDED = {
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "content-encoding",
    "keep-alive",
    "accept-encoding",
}


@dataclass
class EngineFront:
    """An HTTP front of the engine (:func:`engine_front`): its URL, and the paths and bodies it
    forwarded."""

    url: str = ""
    paths: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)


@contextlib.asynccontextmanager
async def engine_front(
    target: str, *, max_bytes: int | None = None, slow: tuple[int, float] | None = None
) -> AsyncIterator[EngineFront]:
    """An HTTP front of the engine that forwards every request and records its path; with
    ``max_bytes``, a body over it is answered 413 as ``http.max_content_length`` does (the shared
    dev node's limit cannot be changed for one test); with ``slow=(size, seconds)``, a body over
    ``size`` bytes is held ``seconds`` before it is forwarded (an engine slow on big requests)."""
    seen = EngineFront()
    async with aiohttp.ClientSession() as session:

        async def forward(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            if max_bytes is not None and len(body) > max_bytes:
                return web.json_response({"error": "content too long"}, status=413)
            if slow is not None and len(body) > slow[0]:
                await asyncio.sleep(slow[1])
            seen.paths.append(request.path)
            seen.bodies.append(body)
            headers = {k: v for k, v in request.headers.items() if k.lower() not in _NOT_FORWARDED}
            async with session.request(
                request.method, target + request.rel_url.raw_path_qs, data=body, headers=headers
            ) as answer:
                payload = await answer.read()
                kept = {k: v for k, v in answer.headers.items() if k.lower() not in _NOT_FORWARDED}
                return web.Response(status=answer.status, body=payload, headers=kept)

        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/{tail:.*}", forward)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            seen.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            yield seen
        finally:
            await runner.cleanup()
