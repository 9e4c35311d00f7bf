"""Benchmark: a proxy under hostile traffic (issue 23), each figure a ratio to a calm baseline.

    python -m benchmarks.hostile [--products 2000] [--rounds 3] [--json PATH]

One run, one machine, one 1-worker proxy (rate limiting on, a bucket too large to run dry, the
loopback trusted as a proxy) serving one cached search, from a Python client on 16 connections.
Rounds alternate calm and hostile so that machine noise hits both alike:

- **large varied headers**: every request a new 14 KB ``X-Forwarded-For`` and ``X-API-Key``
  against plain requests: throughput ratio, and the worker's RSS growth over the hostile ones;
- **slow clients**: 200 sockets sending their headers a byte every 50 ms, against none: search
  p50 and p99 ratios;
- **a /readyz flood**: 50 probes in flight all the time, against none: search p50 and p99 ratios.

Prints each figure with its baseline, the ratio and the load average (these machines are shared:
a ratio is the figure, not an absolute). Everything listens on 127.0.0.1 and is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import aiohttp

from benchmarks.kit.catalog import BenchCatalog, bench_catalog
from benchmarks.kit.percentile import percentile
from benchmarks.kit.processes import spawn, wait_answering
from benchmarks.kit.results import Results
from benchmarks.kit.stack import free_port

SEARCH = "/api/search?q=wand"
CONNECTIONS = 16
FILLER = "x" * 7_000


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _start_proxy(catalog: BenchCatalog) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = catalog.proxy_env(
        RATE_LIMIT_ENABLED="true", RATE_LIMIT_MAX="1000000000", TRUSTED_PROXIES="127.0.0.0/8", CACHE_ENABLED="true"
    )
    proc = spawn([sys.executable, "-m", "proxy", "--port", str(port), "--workers", "1"], env)
    catalog.children.append(proc)
    url = f"http://127.0.0.1:{port}"
    wait_answering(url + SEARCH, proc)
    return proc, url


async def _requests(
    session: aiohttp.ClientSession, url: str, count: int, headers: Callable[[int], dict[str, str]]
) -> tuple[float, list[float]]:
    """Requests per second and each request's latency, over CONNECTIONS concurrent loops."""
    latencies: list[float] = []

    async def loop(first: int) -> None:
        for n in range(first, count, CONNECTIONS):
            started = time.perf_counter()
            async with session.get(url + SEARCH, headers=headers(n)) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"status {response.status}")
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(loop(i) for i in range(CONNECTIONS)))
    return count / (time.perf_counter() - started), latencies


def _plain(n: int) -> dict[str, str]:
    return {}


def _hostile(n: int) -> dict[str, str]:
    return {"X-Forwarded-For": f"{FILLER}{n}, 198.51.{n // 256 % 256}.{n % 256}", "X-API-Key": f"{n}{FILLER}"}


def _p99(values: Sequence[float]) -> float:
    return percentile(values, 99)


async def _trickle(url: str, stop: asyncio.Event) -> None:
    host, port = url.removeprefix("http://").split(":")
    try:
        _, writer = await asyncio.open_connection(host, int(port))
    except OSError:
        return
    data = b"GET " + SEARCH.encode() + b" HTTP/1.1\r\nHost: proxy\r\nX-Padding: " + b"a" * 100_000
    try:
        for byte in data:
            if stop.is_set():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _with_background(
    background: Callable[[asyncio.Event], Awaitable[None]], measure: Callable[[], Awaitable[list[float]]]
) -> list[float]:
    stop = asyncio.Event()
    task = asyncio.ensure_future(background(stop))
    try:
        await asyncio.sleep(0.5)
        return await measure()
    finally:
        stop.set()
        await task


async def _measure(url: str, pid: int, rounds: int, requests: int, results: Results) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONNECTIONS)) as session:
        await _requests(session, url, 500, _plain)  # warm
        plain_rps, hostile_rps, rss_growth = [], [], []
        # Each storm against its baseline in the same round: calm for slow clients; for the
        # /readyz flood, an equal flood of /healthz (the cheapest request): what /readyz costs
        # beyond any request, which is what its cached check and its own slots should make nil.
        calm: dict[str, list[float]] = {"slow": [], "readyz": []}
        stormy: dict[str, list[float]] = {"slow": [], "readyz": []}

        async def searches() -> list[float]:
            return (await _requests(session, url, requests // 2, _plain))[1]

        async def slow_clients(stop: asyncio.Event) -> None:
            await asyncio.gather(*(_trickle(url, stop) for _ in range(200)))

        def flood(path: str) -> Callable[[asyncio.Event], Awaitable[None]]:
            async def run(stop: asyncio.Event) -> None:
                async with aiohttp.ClientSession() as probes:

                    async def probe_loop() -> None:
                        while not stop.is_set():
                            async with probes.get(url + path) as response:
                                await response.read()

                    await asyncio.gather(*(probe_loop() for _ in range(50)))

            return run

        async def nothing(stop: asyncio.Event) -> None:
            await stop.wait()

        for round_ in range(rounds):
            print(f"round {round_ + 1}/{rounds}", flush=True)
            plain_rps.append((await _requests(session, url, requests, _plain))[0])
            before = _rss_mib(pid)
            hostile_rps.append((await _requests(session, url, requests, _hostile))[0])
            rss_growth.append(_rss_mib(pid) - before)
            calm["slow"] += await _with_background(nothing, searches)
            stormy["slow"] += await _with_background(slow_clients, searches)
            calm["readyz"] += await _with_background(flood("/healthz"), searches)
            stormy["readyz"] += await _with_background(flood("/readyz"), searches)

    plain, hostile = statistics.median(plain_rps), statistics.median(hostile_rps)
    results.add("cache hits with 14 KB varied headers", hostile, "req/s", baseline=plain, baseline_label="plain")
    results.add(
        "worker RSS growth per hostile round",
        max(rss_growth),
        "MiB",
        notes=f"{requests} requests of 14 KB new headers each round ({requests * 14 / 1024:.0f} MiB sent)",
    )
    for name, label, baseline_label in (
        ("slow", "200 byte-by-byte clients", "calm"),
        ("readyz", "a /readyz flood (50 in flight)", "an equal /healthz flood"),
    ):
        for stat, of in (("p50", statistics.median), ("p99", _p99)):
            results.add(
                f"search {stat} during {label}",
                of(stormy[name]) * 1000,
                "ms",
                baseline=of(calm[name]) * 1000,
                baseline_label=baseline_label,
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2_000, help="requests per measurement")
    parser.add_argument("--json", type=Path, help="also write the figures here (benchmarks/report.py reads them)")
    args = parser.parse_args(argv)
    results = Results("hostile")
    with bench_catalog("hostile", args.products) as catalog:
        proc, url = _start_proxy(catalog)
        asyncio.run(_measure(url, proc.pid, args.rounds, args.requests, results))
    results.meta["load"] = f"1-worker proxy, Python client on {CONNECTIONS} connections, {SEARCH} cached"
    results.meta["loadavg_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    for figure in results.figures:
        ratio = f"  ratio {figure.ratio:.2f}" if figure.ratio is not None else ""
        baseline = f" (baseline {figure.baseline:.1f})" if figure.baseline is not None else ""
        print(f"{figure.name}: {figure.value:.1f} {figure.unit}{baseline}{ratio}")
    print(f"load average after: {results.meta['loadavg_after']} (a shared, busy machine: ratios only)")
    if args.json:
        results.write(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
