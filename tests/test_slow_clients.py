"""Slow and idle clients cannot hold a worker: real sockets against a real proxy process."""

from __future__ import annotations

import asyncio
import statistics
import time
from urllib.parse import urlsplit

import aiohttp

from devstack.stack import StackUrls
from tests.conftest import SearchCatalog
from tests.proxy_support import proxy_env, running_proxy

SEARCH = "/api/search?q=wand"


async def _connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    return await asyncio.open_connection(parts.hostname, parts.port)


async def _cut_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the server closes the connection within ``seconds`` (it sends nothing first)."""
    try:
        return await asyncio.wait_for(reader.read(1), seconds) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def _trickle(writer: asyncio.StreamWriter) -> None:
    """A request line and headers that never end, one byte every 50 ms (slowloris)."""
    data = b"GET " + SEARCH.encode() + b" HTTP/1.1\r\nHost: proxy\r\nX-Padding: " + b"a" * 10_000
    try:
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)
    except ConnectionError:
        pass  # cut: what the test waits for


async def _search_latencies(session: aiohttp.ClientSession, url: str, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        async with session.get(url + SEARCH) as response:
            assert response.status == 200
            await response.read()
        latencies.append(time.perf_counter() - started)
    return latencies


async def test_byte_by_byte_clients_are_cut_and_searches_keep_answering(
    search_catalog: SearchCatalog, stack_urls: StackUrls
) -> None:
    env = proxy_env(search_catalog, stack_urls, CACHE_ENABLED="true", HTTP_HEADER_TIMEOUT_S="1")
    async with running_proxy(env) as (_, url), aiohttp.ClientSession() as session:
        before = await _search_latencies(session, url, 30)
        slow = [await _connect(url) for _ in range(40)]
        trickles = [asyncio.ensure_future(_trickle(writer)) for _, writer in slow]
        try:
            during = await _search_latencies(session, url, 30)
            # The header timeout is 1 s; aiohttp's own keep-alive timer (3,630 s) never cut them.
            cut = await asyncio.gather(*(_cut_within(reader, 10) for reader, _ in slow))
            assert all(cut), f"{cut.count(False)} of 40 slow clients still connected"
        finally:
            for task in trickles:
                task.cancel()
            for _, writer in slow:
                writer.close()
        # Generous: a shared, busy machine; a held worker would be seconds, not a ratio.
        assert statistics.median(during) <= 5 * statistics.median(before) + 0.05, (before, during)


async def test_connections_beyond_the_cap_are_closed_at_once_and_service_returns_when_they_go(
    search_catalog: SearchCatalog, stack_urls: StackUrls
) -> None:
    env = proxy_env(
        search_catalog, stack_urls, HTTP_HEADER_TIMEOUT_S="60", HTTP_MAX_CONNECTIONS="30", CACHE_ENABLED="true"
    )
    async with running_proxy(env) as (_, url):
        idle = [await _connect(url) for _ in range(50)]
        try:
            # Well before the 60 s header timeout: only the cap can close them.
            cut = await asyncio.gather(*(_cut_within(reader, 5) for reader, _ in idle))
            assert 20 <= cut.count(True) <= 21, cut.count(True)  # one may be the health check's, closing
        finally:
            for _, writer in idle:
                writer.close()
        async with aiohttp.ClientSession() as session:

            async def answers() -> bool:
                try:
                    async with session.get(url + SEARCH) as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            deadline = time.monotonic() + 10
            while not await answers():
                assert time.monotonic() < deadline, "searches did not come back once the idle sockets went"
                await asyncio.sleep(0.1)
