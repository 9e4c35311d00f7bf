"""Benchmark: what the proxy adds on top of the engine, measured as a paired difference.

    python load/bench_proxy.py [--products 5000] [--rounds 60] [--mode both|real|replay]

One run, one machine, same moment: for a fixed mix of searches and suggestions it times
(a) the engine answering the exact body the proxy would send (direct ``POST /<alias>/_search``)
and (b) the same request through the proxy (``GET /api/search?...``, one worker, its response cache
off: ``CACHE_ENABLED=false``, so every request reaches the engine), alternating a/b per request
so machine noise hits both alike. Two engines:

- ``real``: the dev engine (or ``ELASTICSEARCH_NODE``) — realistic, but its latency and noise
  dwarf a millisecond;
- ``replay``: a tiny HTTP server in its own process answering each body with the bytes the
  real engine gave for it — the engine's cost drops out, so the difference is the proxy's own.

Prints p50/p95/p99 of both and of the per-request difference, and the proxy/direct ratio.
Goal (issue): the proxy adds ≤ 1 ms at p50 and ≤ 3 ms at p99. Servers listen on 127.0.0.1 and
are stopped on exit; the loops are bounded by ``--rounds``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: the repository root is not on sys.path

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import orjson  # noqa: E402
from multidict import MultiDict  # noqa: E402

from devstack.databases import ScratchDatabases  # noqa: E402
from devstack.stack import StackUrls  # noqa: E402

# A fixed storefront mix: typo'd and exact text, filters, sorts, deep-ish pages, browse.
SEARCH_MIX: list[list[tuple[str, str]]] = [
    [("q", "hary poter")],
    [("q", "harry potter wand")],
    [("q", "darth vader helmet")],
    [("q", "pikachu plush")],
    [("q", "naruto"), ("sort", "price_asc")],
    [("q", "figure"), ("category", "figures"), ("in_stock", "true")],
    [("category", "props"), ("fandom", "Harry Potter"), ("min_price", "20"), ("max_price", "100")],
    [("fandom", "Star Wars"), ("sort", "rating")],
    [("sort", "newest")],
    [("q", "replica"), ("page", "3"), ("size", "24")],
    [("fandom", "Pokémon,One Piece"), ("sort", "price_desc")],
    [("q", "zelda"), ("min_price", "10")],
]
SUGGEST_MIX: list[list[tuple[str, str]]] = [[("q", "har")], [("q", "pika")], [("q", "hermoine")], [("q", "st")]]


def _body(path: str, params: list[tuple[str, str]]) -> bytes:
    """The exact engine body the proxy sends for this request (with the default synonyms)."""
    from proxy.params import parse_search, parse_suggest
    from proxy.query import build_search, build_suggest
    from proxy.synonyms import DEFAULT_SYNONYMS_PATH, load_synonyms

    query = MultiDict(params)
    if path == "/api/search":
        body = build_search(parse_search(query), load_synonyms(DEFAULT_SYNONYMS_PATH))
    else:
        body = build_suggest(parse_suggest(query))
    return orjson.dumps(body)


def _requests() -> list[tuple[str, list[tuple[str, str]], bytes]]:
    mix = [("/api/search", p) for p in SEARCH_MIX] + [("/api/search/suggestions", p) for p in SUGGEST_MIX]
    return [(path, params, _body(path, params)) for path, params in mix]


# --- the replay engine (runs in its own process) -------------------------------------------


def serve_replay(recording: Path, port: int) -> None:
    from aiohttp import web

    answers: dict[str, bytes] = orjson.loads(recording.read_bytes())
    root = answers.pop("__root__")
    stored = {key: value.encode() for key, value in answers.items()}
    headers = {"X-Elastic-Product": "Elasticsearch"}

    async def info(request: web.Request) -> web.Response:
        return web.Response(body=root.encode(), content_type="application/json", headers=headers)

    async def search(request: web.Request) -> web.Response:
        key = hashlib.sha1(await request.read()).hexdigest()
        return web.Response(body=stored[key], content_type="application/json", headers=headers)

    app = web.Application()
    app.router.add_get("/", info)
    app.router.add_post("/{index}/_search", search)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# --- measurement -----------------------------------------------------------------------------


def _percentile(values: Sequence[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


async def _timed(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> float:
    started = time.perf_counter()
    async with session.request(method, url, **kwargs) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {url}: {response.status}")
    return (time.perf_counter() - started) * 1000


async def measure(engine_url: str, alias: str, proxy_url: str, rounds: int) -> dict[str, list[float]]:
    """Paired timings: ``direct``, ``proxy`` (all requests), and ``<kind> direct|proxy`` per kind."""
    requests = _requests()
    direct: list[float] = []
    proxied: list[float] = []
    kinds: list[str] = []
    headers = {"Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=4)
    async with aiohttp.ClientSession(connector=connector) as session:
        for warm in range(3):  # warm caches, JIT-free but not connection-free: open keep-alives
            for path, params, body in requests:
                await _timed(session, "POST", f"{engine_url}/{alias}/_search", data=body, headers=headers)
                await _timed(session, "GET", proxy_url + path, params=params)
            del warm
        for round_no in range(rounds):
            for path, params, body in requests:
                pair = [
                    (
                        "direct",
                        lambda b=body: _timed(
                            session, "POST", f"{engine_url}/{alias}/_search", data=b, headers=headers
                        ),
                    ),
                    ("proxy", lambda p=path, q=params: _timed(session, "GET", proxy_url + p, params=q)),
                ]
                if round_no % 2:
                    pair.reverse()
                for name, call in pair:
                    (direct if name == "direct" else proxied).append(await call())
                kinds.append("search" if path == "/api/search" else "suggestions")
    samples = {"direct": direct, "proxy": proxied}
    for kind in ("search", "suggestions"):
        samples[f"{kind} direct"] = [d for d, k in zip(direct, kinds, strict=True) if k == kind]
        samples[f"{kind} proxy"] = [p for p, k in zip(proxied, kinds, strict=True) if k == kind]
    return samples


def report(label: str, samples: dict[str, list[float]]) -> None:
    direct, proxied = samples["direct"], samples["proxy"]
    diffs = [p - d for p, d in zip(proxied, direct, strict=True)]
    print(f"\n{label}: {len(direct)} requests each way")
    print(f"{'':<22}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}")
    rows = [("engine direct", direct), ("through proxy", proxied), ("difference (paired)", diffs)]
    for kind in ("search", "suggestions"):
        rows += [(f"{kind}: direct", samples[f"{kind} direct"]), (f"{kind}: proxy", samples[f"{kind} proxy"])]
    for name, values in rows:
        print(f"{name:<22}" + "".join(f"{_percentile(values, p):>10.2f}" for p in (50, 95, 99)))
    added50 = _percentile(proxied, 50) - _percentile(direct, 50)
    added99 = _percentile(proxied, 99) - _percentile(direct, 99)
    ratio = statistics.median(proxied) / statistics.median(direct)
    print(
        f"added at p50: {added50:.2f} ms (goal ≤ 1)   added at p99: {added99:.2f} ms (goal ≤ 3)   "
        f"proxy/direct median ratio: {ratio:.2f}"
    )


# --- orchestration ---------------------------------------------------------------------------


async def prepare_catalog(dbs: ScratchDatabases, urls: StackUrls, products: int) -> tuple[str, str]:
    """A fresh database with N sample products, indexed behind a fresh alias by a real reindex."""
    from catalog.seed import seed_catalog
    from indexer.service import run_reindex
    from indexer.settings import IndexerSettings

    url = await dbs.create("proxy")
    conn = await asyncpg.connect(url)
    try:
        await seed_catalog(conn, products)
    finally:
        await conn.close()
    alias = f"bench{uuid.uuid4().hex[:8]}_products"
    settings = IndexerSettings(
        database_url=url,
        redis_url=urls.redis_url,
        redis_key_prefix=f"{alias}:",
        elasticsearch_node=urls.elasticsearch_node,
        search_index=alias,
        metrics_port=0,
        index_replicas=0,
    )
    await run_reindex(settings, asyncio.Event())
    return url, alias


async def cleanup(dbs: ScratchDatabases, engine_url: str, alias: str | None) -> None:
    """Drop what the run created, so a run against real servers leaves nothing behind."""
    from catalog.engine import create_engine_client

    await dbs.drop_all()
    if alias:
        client, _ = await create_engine_client(engine_url)
        try:
            await client.indices.delete(index=f"{alias}*", ignore_unavailable=True, allow_no_indices=True)
        finally:
            await client.close()


async def record(engine_url: str, alias: str) -> bytes:
    """Every answer of the mix from the real engine, keyed by the body's hash, as JSON bytes."""
    answers: dict[str, str] = {}
    async with aiohttp.ClientSession() as session:
        async with session.get(engine_url + "/") as response:
            answers["__root__"] = (await response.read()).decode()
        for _, _, body in _requests():
            async with session.post(
                f"{engine_url}/{alias}/_search", data=body, headers={"Content-Type": "application/json"}
            ) as response:
                answers[hashlib.sha1(body).hexdigest()] = (await response.read()).decode()
    return orjson.dumps(answers)


def start_proxy(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "--port", str(port), "--workers", "1"], cwd=ROOT, env=env)
    _wait_http(f"http://127.0.0.1:{port}/healthz", proc)
    return proc


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    from devstack.servers import wait_http

    if not wait_http(url, proc, timeout):
        raise RuntimeError(f"{url} did not answer (process exit status {proc.poll()})")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--products", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=60, help="passes over the 16-request mix per engine")
    parser.add_argument("--mode", choices=["both", "real", "replay"], default="both")
    parser.add_argument("--serve-replay", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_replay:
        serve_replay(args.serve_replay, args.port)
        return 0

    from devstack.servers import free_port
    from devstack.stack import DevStack

    stack = DevStack(os.environ)
    children: list[subprocess.Popen[bytes]] = []
    dbs: ScratchDatabases | None = None
    alias: str | None = None
    try:
        urls = stack.start()
        dbs = ScratchDatabases(urls.database_url)
        print(f"engine {urls.elasticsearch_node}; seeding and indexing {args.products} products…", flush=True)
        database_url, alias = asyncio.run(prepare_catalog(dbs, urls, args.products))
        env = {
            **os.environ,
            **urls.as_env(),
            "DATABASE_URL": database_url,
            "SEARCH_INDEX": alias,
            "LOG_LEVEL": "warning",
            "RATE_LIMIT_ENABLED": "false",
            # What the proxy adds over the engine: every request must reach the engine.
            "CACHE_ENABLED": "false",
        }
        if args.mode in ("both", "real"):
            port = free_port()
            children.append(start_proxy(env, port))
            samples = asyncio.run(measure(urls.elasticsearch_node, alias, f"http://127.0.0.1:{port}", args.rounds))
            report(f"real engine ({args.products} products)", samples)
            _stop(children.pop())
        if args.mode in ("both", "replay"):
            recording = Path(stack.workdir or ".") / "replay.json"
            recording.write_bytes(asyncio.run(record(urls.elasticsearch_node, alias)))
            replay_port = free_port()
            replay = subprocess.Popen(
                [sys.executable, __file__, "--serve-replay", str(recording), "--port", str(replay_port)], cwd=ROOT
            )
            children.append(replay)
            replay_url = f"http://127.0.0.1:{replay_port}"
            _wait_http(replay_url + "/", replay)
            port = free_port()
            children.append(start_proxy({**env, "ELASTICSEARCH_NODE": replay_url}, port))
            samples = asyncio.run(measure(replay_url, alias, f"http://127.0.0.1:{port}", args.rounds * 4))
            report("replay engine (engine cost removed)", samples)
    finally:
        for child in children:
            _stop(child)
        if dbs is not None and stack.urls is not None:
            asyncio.run(cleanup(dbs, stack.urls.elasticsearch_node, alias))
        stack.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
