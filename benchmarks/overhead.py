"""Benchmark: what the proxy adds on top of the engine, measured as a paired difference.

    python -m benchmarks.overhead [--products 5000] [--rounds 60] [--mode both|real|replay] [--engine-profile RUNS]

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
Goals (issue 24): the proxy adds ≤ 1 ms at p50 and ≤ 3 ms at p99; at 150k products search p99
< 50 ms and suggestions p99 < 20 ms through the proxy. ``--engine-profile RUNS`` then asks the
engine where its time goes for each request of the mix (``"profile": true``): its own ``took``,
its costliest clauses and aggregations, and counts of work load does not change.

On the replay engine it also times **cache misses as deployed** (issue 24): two more proxies with
the cache on (L1 and L2 in Redis), one with the rate limiter off and one with it on, each asked
requests no cache has seen (the mix's text queries with a word of their own, ``MISS_MARK``),
interleaved with the engine answering the same bodies directly: what a miss adds over the engine
call it makes (goal ≤ 1 ms at p50 with the limiter off and on). In the same rounds, the same
requests go to the proxy without its cache and to **the floor under a miss**: bare forwarders
(``benchmarks/kit/forwarder.py``) that POST the proxy's engine body for each GET with one aiohttp
client session and answer the engine's bytes — on a ``web.Application``, on aiohttp's low-level
``web.Server``, and on an application making the miss's two Redis round trips with redis-py (the
cache's own read-or-lock and fill scripts) — what any aiohttp (+ redis-py) proxy pays before its
own code — and the same two forwarders written in Go (``benchmarks/kit/goforwarder/``: net/http
server and client, go-redis, the same scripts and keys), the floor of a proxy that is not Python,
the remedy the floor's cost pointed at, measured instead of named (built with ``go build`` when
the bench starts; without ``go``, or if the build fails, the bench says so and goes on without
them). Each forwarder is checked to answer the engine's very bytes before the timing. Each
server's added p50/p99 over the engine, its on-CPU µs per request and (under the call counter,
``benchmarks/kit/counting.py``; not the Go ones) its Python calls per request are reported, and
the proxy's against the floor doing the same round trips (no cache: the bare forwarder; cache on:
the forwarder + Redis; each in Python and in Go) as ratios. Servers listen on 127.0.0.1 and are
stopped on exit; the loops are bounded by ``--rounds``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from multidict import MultiDict

from benchmarks.kit.catalog import BenchCatalog, bench_catalog
from benchmarks.kit.counting import Calls, counting
from benchmarks.kit.forwarder import (
    GoUnavailable,
    build_go_forwarder,
    request_target,
    start_forwarder,
    start_go_forwarder,
    write_bodies,
)
from benchmarks.kit.percentile import percentile
from benchmarks.kit.processes import BIG_BUCKET, free_port, start_server, tree_sched_times
from benchmarks.kit.profiling import available, sampling, summarise, summary
from benchmarks.kit.results import Results
from catalog.processes import stop_process
from proxy.taxonomy import taxonomy_body

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
    """The exact engine body the proxy sends for this request (with the default synonyms; for
    suggestions, once it holds the fandom and category vocabulary, ``proxy.taxonomy``)."""
    from proxy.params import parse_search, parse_suggest
    from proxy.query import build_search, build_suggest
    from proxy.synonyms import DEFAULT_SYNONYMS_PATH, load_synonyms

    query = MultiDict(params)
    if path == "/api/search":
        body = build_search(parse_search(query), load_synonyms(DEFAULT_SYNONYMS_PATH))
    else:
        body = build_suggest(parse_suggest(query), count_taxonomy=False)
    return orjson.dumps(body)


def _requests() -> list[tuple[str, list[tuple[str, str]], bytes]]:
    mix = [("/api/search", p) for p in SEARCH_MIX] + [("/api/search/suggestions", p) for p in SUGGEST_MIX]
    return [(path, params, _body(path, params)) for path, params in mix]


# A word in every cache-miss request's text that the replay engine recognises (see serve_replay).
MISS_MARK = "qqmiss"
SUGGEST_MARK = "qqsugg"


def _miss_requests(round_no: int) -> list[tuple[str, list[tuple[str, str]], bytes]]:
    """The mix's requests with text, each made new (a word of its own in ``q``) so that no cache
    has seen it: every one is a miss, and its engine body is still the same kind of query."""
    out = []
    for path, params, _ in _requests():
        if not any(name == "q" for name, _ in params):
            continue
        mark = SUGGEST_MARK if path != "/api/search" else MISS_MARK
        new = [(name, f"{value} {mark}{round_no}" if name == "q" else value) for name, value in params]
        out.append((path, new, _body(path, new)))
    return out


# --- the replay engine (runs in its own process) -------------------------------------------


def serve_replay(recording: Path, port: int) -> None:
    from aiohttp import web

    answers: dict[str, str] = orjson.loads(recording.read_bytes())
    root = answers.pop("__root__")
    stored = {key: value.encode() for key, value in answers.items()}
    headers = {"X-Elastic-Product": "Elasticsearch"}

    async def info(request: web.Request) -> web.Response:
        return web.Response(body=root.encode(), content_type="application/json", headers=headers)

    async def search(request: web.Request) -> web.Response:
        body = await request.read()
        answer = stored.get(hashlib.sha1(body).hexdigest())
        if answer is None:  # a cache-miss request (_miss_requests): the mix's first answer of its kind
            answer = stored["__suggest__" if SUGGEST_MARK.encode() in body else "__search__"]
        return web.Response(body=answer, content_type="application/json", headers=headers)

    app = web.Application()
    app.router.add_get("/", info)
    app.router.add_post("/{index}/_search", search)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# --- measurement -----------------------------------------------------------------------------


async def _timed(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> float:
    started = time.perf_counter()
    async with session.request(method, url, **kwargs) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"{method} {url}: {response.status}")
    return (time.perf_counter() - started) * 1000


async def _timed_as(session: aiohttp.ClientSession, url: str, params: list[tuple[str, str]], cache: str) -> float:
    """A request to a cached proxy: its time, or NaN unless it was answered with ``X-Cache:
    <cache>`` (HIT: from the cache; MISS: through the cache's miss path, from the engine)."""
    started = time.perf_counter()
    async with session.get(url, params=params) as response:
        await response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {url}: {response.status}")
        answered_as = response.headers.get("X-Cache")
    return (time.perf_counter() - started) * 1000 if answered_as == cache else float("nan")


async def measure(
    engine_url: str, alias: str, proxy_url: str, rounds: int, hit_url: str | None = None
) -> dict[str, list[float]]:
    """Paired timings: ``direct``, ``proxy`` (all requests), and ``<kind> direct|proxy`` per kind;
    with ``hit_url`` (a proxy with its cache on) also ``hit`` and ``<kind> hit``: the same request
    answered from the cache, interleaved with the other two (NaN where it was not a HIT)."""
    requests = _requests()
    direct: list[float] = []
    proxied: list[float] = []
    hits: list[float] = []
    kinds: list[str] = []
    headers = {"Content-Type": "application/json"}
    search_url = f"{engine_url}/{alias}/_search"
    connector = aiohttp.TCPConnector(limit=4)
    async with aiohttp.ClientSession(connector=connector) as session:
        for warm in range(3):  # warm caches, JIT-free but not connection-free: open keep-alives
            for path, params, body in requests:
                await _timed(session, "POST", f"{engine_url}/{alias}/_search", data=body, headers=headers)
                await _timed(session, "GET", proxy_url + path, params=params)
                if hit_url:
                    await _timed(session, "GET", hit_url + path, params=params)
            del warm
        for round_no in range(rounds):
            for path, params, body in requests:
                pair: list[tuple[str, Callable[[], Awaitable[float]]]] = [
                    ("direct", partial(_timed, session, "POST", search_url, data=body, headers=headers)),
                    ("proxy", partial(_timed, session, "GET", proxy_url + path, params=params)),
                ]
                if hit_url:
                    pair.append(("hit", partial(_timed_as, session, hit_url + path, params, "HIT")))
                if round_no % 2:
                    pair.reverse()
                for name, call in pair:
                    {"direct": direct, "proxy": proxied, "hit": hits}[name].append(await call())
                kinds.append("search" if path == "/api/search" else "suggestions")
    samples = {"direct": direct, "proxy": proxied}
    for kind in ("search", "suggestions"):
        samples[f"{kind} direct"] = [d for d, k in zip(direct, kinds, strict=True) if k == kind]
        samples[f"{kind} proxy"] = [p for p, k in zip(proxied, kinds, strict=True) if k == kind]
    if hit_url:
        samples["hit"] = [h for h in hits if h == h]
        for kind in ("search", "suggestions"):
            samples[f"{kind} hit"] = [h for h, k in zip(hits, kinds, strict=True) if k == kind and h == h]
    return samples


async def measure_suggestions(proxies: dict[str, str], rounds: int) -> dict[str, list[float]]:
    """The mix's suggestions through each of ``proxies`` (label -> URL), interleaved request by
    request (the order turned each round), ``rounds`` passes: same requests, same moment."""
    samples: dict[str, list[float]] = {label: [] for label in proxies}
    suggestions = [params for path, params, _ in _requests() if path != "/api/search"]
    order = list(proxies.items())
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4)) as session:
        for round_no in range(rounds + 3):  # 3 warm-up rounds, not kept
            for params in suggestions:
                for label, url in order:
                    took = await _timed(session, "GET", url + "/api/search/suggestions", params=params)
                    if round_no >= 3:
                        samples[label].append(took)
            order.reverse()
    return samples


def record_suggestions(results: Results, samples: dict[str, list[float]], products: int) -> None:
    """Suggestions with the proxy holding the fandom and category vocabulary, against the engine
    counting them per keystroke (the way before it), interleaved."""
    held, counting = samples[HELD], samples[COUNTING]
    print(f"\nsuggestions, real engine, cache off: {len(held)} requests each way, interleaved")
    print(f"{'':<22}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}")
    for label, values in samples.items():
        print(f"{label:<22}" + "".join(f"{percentile(values, p):>10.2f}" for p in (50, 95, 99)))
    results.add(
        f"suggestions through the proxy (cache off), p99, fandoms and categories from the held vocabulary, "
        f"{products:,} products",
        percentile(held, 99),
        "ms",
        baseline=percentile(counting, 99),
        baseline_label="the engine counting them on every keystroke (SUGGEST_TAXONOMY_REFRESH_S=0), same requests "
        "interleaved",
        notes=f"{len(held):,} requests each; p50 {percentile(held, 50):.1f} ms (engine counting "
        f"{percentile(counting, 50):.1f})",
    )


async def measure_misses(
    engine_url: str,
    alias: str,
    targets: dict[str, tuple[str, str | None]],
    rounds: int,
    pids: dict[str, int] | None = None,
) -> dict[str, list[float]]:
    """Paired timings of cache misses: per request new to every cache, the engine answering the
    exact body directly (``direct``) and each server of ``targets`` (label -> (base URL, the
    X-Cache it must answer with, or None for a forwarder, ``benchmarks.kit.forwarder``))
    answering it: a proxy with its cache on through its miss path (the L1 miss, the one Redis
    round trip before the engine — L2 read + stampede lock, the limiter's decision unless a lease
    covers it —, the engine call, the answer; its L2 write happens after), the proxy without its
    cache (BYPASS), a forwarder with the least a proxy does. Order rotates per request.

    ``pids`` (label -> process; ``direct`` for the engine's): also ``<label> cpu``, one sample,
    each process's CPU microseconds per request of the measured rounds (time on a CPU, all its
    threads: ``benchmarks.kit.processes.tree_sched_times``)."""
    headers = {"Content-Type": "application/json"}
    search_url = f"{engine_url}/{alias}/_search"
    samples: dict[str, list[float]] = {"direct": [], **{label: [] for label in targets}}
    pids = pids or {}
    cpu_at_start: dict[str, float] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4)) as session:
        for round_no in range(rounds + 2):  # two rounds of warm-up: connections, code paths
            if round_no == 2:
                cpu_at_start = {label: tree_sched_times(pid).running for label, pid in pids.items()}
            for n, (path, params, body) in enumerate(_miss_requests(round_no)):
                calls: list[tuple[str, Callable[[], Awaitable[float]]]] = [
                    ("direct", partial(_timed, session, "POST", search_url, data=body, headers=headers))
                ]
                for label, (url, cache) in targets.items():
                    if cache is None:
                        calls.append((label, partial(_timed, session, "GET", url + path, params=params)))
                    else:
                        calls.append((label, partial(_timed_as, session, url + path, params, cache)))
                shift = (round_no + n) % len(calls)
                timings = [(label, await call()) for label, call in calls[shift:] + calls[:shift]]
                if round_no >= 2:
                    for label, ms in timings:
                        samples[label].append(ms)
    # The replay engine answers the direct requests and every other server's: it served them all.
    served = {label: len(samples[label]) * (1 if label != "direct" else 1 + len(targets)) for label in pids}
    for label, pid in pids.items():
        ran = tree_sched_times(pid).running - cpu_at_start[label]
        samples[f"{label} cpu"] = [ran * 1e6 / max(served[label], 1)]
    return samples


def record_misses(results: Results, samples: dict[str, list[float]]) -> None:
    """What a cache miss adds over the engine call it makes, with the limiter off and on."""
    direct = samples["direct"]
    print(f"\ncache misses, replay engine: {len(direct)} requests each way (each request new to every cache)")
    print(f"{'':<34}{'p50 ms':>10}{'p99 ms':>10}{'added p50':>11}{'added p99':>11}")
    print(f"{'engine direct':<34}{percentile(direct, 50):>10.2f}{percentile(direct, 99):>10.2f}")
    for label, goal_note in (("miss, limiter off", "limiter off"), ("miss, limiter on", "limiter on (as deployed)")):
        mine = [ms for ms in samples[label] if ms == ms]
        not_miss = len(samples[label]) - len(mine)
        added50 = percentile(mine, 50) - percentile(direct, 50)
        added99 = percentile(mine, 99) - percentile(direct, 99)
        print(
            f"{'proxy, ' + label:<34}{percentile(mine, 50):>10.2f}{percentile(mine, 99):>10.2f}"
            f"{added50:>+11.2f}{added99:>+11.2f}" + (f"   ({not_miss} answers were not a MISS)" if not_miss else "")
        )
        results.add(
            f"cache miss: added p50 over the engine call it makes, {goal_note}",
            added50,
            "ms",
            goal="≤ 1 ms",
            met=added50 <= 1.0 and not_miss == 0,
            notes=f"{len(mine):,} misses interleaved with the engine direct (replay engine, p50 "
            f"{percentile(direct, 50):.2f} ms); proxy p50 {percentile(mine, 50):.2f} ms, added p99 {added99:+.2f} ms"
            + (f"; {not_miss} answers were not a MISS" if not_miss else ""),
        )


def record_miss_cpu(results: Results, samples: dict[str, list[float]]) -> None:
    """Each process's CPU per request in the miss run: the proxies' against the replay engine's."""
    if "direct cpu" not in samples:
        return
    engine = samples["direct cpu"][0]
    print(f"on-CPU µs per request (/proc schedstat): replay engine {engine:.0f}", end="")
    for label in samples:
        if label.startswith("miss, ") and label.endswith(" cpu"):
            mine = samples[label][0]
            print(f"   proxy, {label[:-4]} {mine:.0f} ({mine / engine:.2f} ×)", end="")
            results.add(
                f"cache miss: proxy CPU per request, {label[6:-4]}",
                mine,
                "µs",
                baseline=engine,
                baseline_label="replay engine (bare aiohttp) CPU per request, same run",
                notes="on-CPU time (/proc/<pid>/schedstat), not stretched by waiting for a CPU on a busy machine",
            )
    print()


# Where a miss's time goes: groups of frames a sample passes through (inclusive; one sample may
# be in several), for benchmarks.kit.profiling.summary.
MISS_GROUPS: dict[str, tuple[str, ...]] = {
    "engine call (elasticsearch-py, elastic_transport, aiohttp client)": (
        "elasticsearch/",
        "elastic_transport/",
        "aiohttp/client",
        "proxy/engine.py",
    ),
    "elasticsearch-py + elastic_transport alone": ("elasticsearch/", "elastic_transport/"),
    "answer shaping (proxy/answers.py)": ("proxy/answers.py",),
    "engine body (proxy/query.py)": ("proxy/query.py",),
    "parameters (proxy/params.py)": ("proxy/params.py",),
    "response cache (proxy/cache/)": ("proxy/cache/",),
    "redis-py": ("redis/",),
    "rate limiter (proxy/ratelimit/, its middleware)": ("proxy/ratelimit/", "proxy/middleware/ratelimit.py"),
    "metrics (prometheus_client, proxy/metrics.py)": ("prometheus_client/", "proxy/metrics.py"),
    "logging": ("logging/",),
    "aiohttp server (web_protocol, web_request, web_response, http_writer)": (
        "aiohttp/web_",
        "aiohttp/http_writer",
        "aiohttp/http_parser",
    ),
}
MISS_PROFILE_RATE = 1000  # samples per second: a miss is about a millisecond of work


def _miss_rounds(first_round: int, count: int) -> range:
    """The rounds of :func:`_miss_requests` that :func:`_misses` sends for ``count`` misses."""
    return range(first_round, first_round + -(-count // len(_miss_requests(first_round))))


async def _misses(url: str, first_round: int, count: int) -> int:
    """``count`` requests new to every cache (whole rounds of them), one at a time, to the
    proxy at ``url``."""
    sent = 0
    async with aiohttp.ClientSession() as session:
        for round_no in _miss_rounds(first_round, count):
            for path, params, _ in _miss_requests(round_no):
                await _timed(session, "GET", url + path, params=params)
                sent += 1
    return sent


def profile_misses(proxies: dict[str, tuple[str, int]], requests: int, keep: Path | None) -> None:
    """Where a miss's time goes in each proxy (label -> (URL, pid)): ``requests`` more misses,
    one at a time, under py-spy (``benchmarks.kit.profiling``), as busy µs per request by part,
    the share of each of :data:`MISS_GROUPS` and the heaviest functions, and the process's
    on-CPU µs per request. ``keep``: a folder for py-spy's raw stacks (flame graphs)."""
    why = available()
    if why is not None:
        print(f"miss profile: skipped ({why})")
        return
    folder = keep or Path(tempfile.mkdtemp(prefix="hos-miss-profile-"))
    folder.mkdir(parents=True, exist_ok=True)
    for n, (label, (url, pid)) in enumerate(proxies.items()):
        raw = folder / f"miss-{label.replace(' ', '-').replace(',', '')}.txt"
        before = tree_sched_times(pid).running
        with sampling(pid, raw, rate=MISS_PROFILE_RATE):
            sent = asyncio.run(_misses(url, 100_000 * (n + 1), requests))
        cpu = (tree_sched_times(pid).running - before) * 1e6 / sent
        profile = summarise(raw.read_text(), MISS_PROFILE_RATE) if raw.exists() else None
        print(f"\nmiss profile, proxy {label}: {sent} misses, on-CPU {cpu:.0f} µs per request")
        if profile is None:
            print("  py-spy wrote no samples")
            continue
        print(
            "  busy µs per request by part: "
            + ", ".join(f"{part} {us:.0f}" for part, us in profile.part_rows(sent).items())
        )
        print(f"  total busy {profile.microseconds(profile.samples, sent):.0f} µs per request")
        print("\n".join("  " + line for line in summary(raw, MISS_GROUPS, top=25)))
    if keep is None:
        shutil.rmtree(folder, ignore_errors=True)


COUNTED_MISSES = 200
WARM_ROUND, WARM_MISSES = 500_000, 20  # the uncounted misses before the counted ones
COUNTED_ROUND = 600_000
CHECK_ROUND = 800_000  # the requests each forwarder must answer with the engine's bytes (check_forwarder)
READY_ROUND = 900_000  # the one request a forwarder answers before it counts as started

# A server of the miss run, started by a call with ``counted_to`` (a path: under the call
# counter, writing there; None: plain): its process and base URL.
Starter = Callable[..., tuple[subprocess.Popen[bytes], str]]


def proxy_at(env: dict[str, str], counted_to: Path | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """A 1-worker proxy of ``env`` on a free port (a :data:`Starter`)."""
    port = free_port()
    return start_proxy(env, port, counted_to), f"http://127.0.0.1:{port}"


def go_floors(catalog: BenchCatalog, bodies: Path, search_url: str, ready: str, results: Results) -> dict[str, Starter]:
    """The Go forwarders (:data:`GO_BARE`, :data:`GO_WITH_REDIS`) as :data:`Starter` s, built into
    the bench's workdir; none, said in the output and the results, without ``go`` or a build (and
    no Go + Redis on a Redis Cluster, which the Go forwarder does not speak)."""
    try:
        binary = build_go_forwarder(catalog.workdir)
    except GoUnavailable as why:
        print(f"\nGo floors: not measured ({why})")
        results.meta["go_floors"] = f"not measured: {why}"
        return {}

    def go(counted_to: Path | None = None, **more: Any) -> tuple[subprocess.Popen[bytes], str]:
        if counted_to is not None:
            raise ValueError("the Go forwarder has no Python calls to count")
        return start_go_forwarder(binary, bodies, search_url, ready, **more)

    starters: dict[str, Starter] = {GO_BARE: go}
    if catalog.urls.redis_cluster:
        print(f"\n{GO_WITH_REDIS}: not measured (the Go forwarder speaks to one Redis, not a cluster)")
        results.meta["go_floors"] = f"{GO_WITH_REDIS} not measured: Redis Cluster"
    else:
        starters[GO_WITH_REDIS] = partial(go, redis_url=catalog.urls.redis_url, prefix=f"{catalog.alias}-goforwarder:")
    return starters


async def check_forwarder(label: str, url: str, search_url: str) -> None:
    """Raise unless the forwarder at ``url`` answers each request of :data:`CHECK_ROUND` with the
    very bytes the engine answers its body with: a floor must do the proxy's work, not less."""
    async with aiohttp.ClientSession() as session:
        for path, params, body in _miss_requests(CHECK_ROUND):
            async with session.post(search_url, data=body, headers={"Content-Type": "application/json"}) as answer:
                engine = await answer.read()
            async with session.get(url + path, params=params) as answer:
                forwarded = await answer.read()
                status = answer.status
            if status != 200 or forwarded != engine:
                raise RuntimeError(
                    f"{label} answered {path} {params} with {status}, {len(forwarded)} bytes, not the engine's "
                    f"{len(engine)} bytes"
                )


def count_misses(servers: dict[str, Starter], workdir: Path, results: Results) -> dict[str, Calls]:
    """Python calls per miss of each server (label -> how to start it), by part: the same misses,
    one at a time, counted (``benchmarks/kit/counting.py``) after a few uncounted ones. The
    proxies' (labels ``proxy, …``) as figures, each against the first (the proxy without its
    cache); the forwarders' are returned for :func:`record_floors`."""
    counted: dict[str, Calls] = {}
    for n, (label, start) in enumerate(servers.items()):
        stats = workdir / f"miss-{n}.calls"
        proc, url = start(counted_to=stats)
        try:
            asyncio.run(_misses(url, WARM_ROUND, WARM_MISSES))  # connections, caches and lazy imports warmed
            with counting(proc.pid, stats):
                sent = asyncio.run(_misses(url, COUNTED_ROUND, COUNTED_MISSES))
            counted[label] = Calls.read(stats, sent)
        finally:
            stop_process(proc)
    first = next(iter(counted))
    print(f"\nPython calls per miss (cProfile's count of {COUNTED_MISSES} misses, one at a time; start-up excluded):")
    for label, calls in counted.items():
        parts = ", ".join(f"{part} {n:.0f}" for part, n in calls.by_part().items() if n >= 0.5)
        print(f"  {label}: {calls.total:.0f} — {parts}")
        if not label.startswith("proxy"):
            continue  # a forwarder: the proxy's calls beyond its own are in record_floors
        if label != first:
            grown = calls.more_than(counted[first], top=10)
            print("    most added over " + first + ": " + "; ".join(f"+{n:.1f} {f}" for n, f in grown))
        results.add(
            f"Python calls per cache miss, {label}",
            calls.total,
            "calls",
            baseline=None if label == first else counted[first].total,
            baseline_label="" if label == first else f"{first}, same run",
            notes="counted, not timed (the machine's noise does not move it); by part: " + parts,
        )
    return counted


# The floors under a miss (issue 24), each held against the proxy doing the same round trips:
# the bare forwarder (aiohttp server + client) against the proxy without its cache, the forwarder
# with the cache's two Redis round trips against the proxy with its cache on (limiter off).
BARE = "bare forwarder (web.Application)"
WITH_REDIS = "forwarder + Redis (web.Application)"
LOW_LEVEL = "bare forwarder (low-level web.Server)"
# The same two in Go (net/http, go-redis): what the proxy's floor would be were it not Python.
GO_BARE = "Go bare forwarder (net/http)"
GO_WITH_REDIS = "Go forwarder + Redis (net/http, go-redis)"
NO_CACHE = "proxy, no cache"
FLOOR_OF = {
    BARE: NO_CACHE,
    WITH_REDIS: "miss, limiter off",
    LOW_LEVEL: NO_CACHE,
    GO_BARE: NO_CACHE,
    GO_WITH_REDIS: "miss, limiter off",
}
PYTHON_PEER = {GO_BARE: BARE, GO_WITH_REDIS: WITH_REDIS}  # the Python forwarder doing the same work


def record_floors(results: Results, samples: dict[str, list[float]], calls: dict[str, Calls]) -> None:
    """What each forwarder adds over the engine, its CPU and Python calls per request, beside
    the proxy's (same rounds); as figures: the proxy's added p50, CPU and calls against each
    floor (ratio: the proxy's ÷ the floor's)."""
    direct = samples["direct"]

    def added(label: str, pct: float) -> float:
        return percentile([ms for ms in samples[label] if ms == ms], pct) - percentile(direct, pct)

    def counted(label: str) -> Calls | None:
        return calls.get(f"proxy, {label[6:]}" if label.startswith("miss, ") else label)

    floors = {floor: proxy for floor, proxy in FLOOR_OF.items() if floor in samples}  # the Go ones may be absent
    print(f"\nthe floor under a miss, same rounds ({len(direct)} requests each):")
    print(f"{'':<44}{'added p50':>11}{'added p99':>11}{'CPU µs/req':>12}{'calls/req':>11}")
    for label in (NO_CACHE, "miss, limiter off", "miss, limiter on", *floors):
        counts = counted(label)
        print(
            f"{label:<44}{added(label, 50):>+11.2f}{added(label, 99):>+11.2f}{samples[label + ' cpu'][0]:>12.0f}"
            + (f"{counts.total:>11.0f}" if counts is not None else f"{'—':>11}")
        )
    for go, python in PYTHON_PEER.items():
        if go not in samples:
            continue
        results.add(
            f"cache miss floor: {go}, added p50 over the engine against {python}",
            added(go, 50),
            "ms",
            baseline=added(python, 50),
            baseline_label=f"{python}, added p50 over the engine, same rounds",
            notes=f"added p99 {added(go, 99):+.2f} ms against {added(python, 99):+.2f} ms; CPU per request "
            f"{samples[go + ' cpu'][0]:.0f} µs (all threads) against {samples[python + ' cpu'][0]:.0f} µs; the proxy "
            f"({FLOOR_OF[go]}) added {added(FLOOR_OF[go], 50):+.2f} ms in the same rounds",
        )
    for floor, proxy in floors.items():
        shown = "proxy, cache on, limiter off" if proxy == "miss, limiter off" else proxy
        results.add(
            f"cache miss floor: {shown}, added p50 against {floor}",
            added(proxy, 50),
            "ms",
            baseline=added(floor, 50),
            baseline_label=f"{floor}, added p50 over the engine, same rounds",
            notes=f"added p99 {added(proxy, 99):+.2f} ms against {added(floor, 99):+.2f} ms; " + _forwarder_note(floor),
        )
        results.add(
            f"cache miss floor: {shown}, CPU per request against {floor}",
            samples[proxy + " cpu"][0],
            "µs",
            baseline=samples[floor + " cpu"][0],
            baseline_label=f"{floor}, same rounds",
            notes=f"on-CPU time (/proc/<pid>/schedstat); replay engine {samples['direct cpu'][0]:.0f} µs",
        )
        mine, theirs = counted(proxy), counted(floor)
        if mine is not None and theirs is not None:
            grown = mine.more_than(theirs, top=12)
            print(f"{shown}'s calls beyond {floor}'s: " + "; ".join(f"+{n:.1f} {f}" for n, f in grown))
            results.add(
                f"cache miss floor: {shown}, Python calls per request against {floor}",
                mine.total,
                "calls",
                baseline=theirs.total,
                baseline_label=f"{floor}, same run",
                notes="counted (cProfile), not timed; the forwarder's by part: "
                + ", ".join(f"{part} {n:.0f}" for part, n in theirs.by_part().items() if n >= 0.5),
            )


def _forwarder_note(floor: str) -> str:
    """What the forwarder ``floor`` is, for a figure's notes."""
    redis = floor in (WITH_REDIS, GO_WITH_REDIS)
    if floor in PYTHON_PEER:
        return (
            "the forwarder: a Go net/http server POSTing the proxy's engine body with one keep-alive http.Client "
            "and answering the engine's bytes" + (", with the miss's two Redis EVALSHAs (go-redis)" if redis else "")
        )
    return (
        "the forwarder: an aiohttp server POSTing the proxy's engine body with one aiohttp ClientSession and answering "
        "the engine's bytes" + (", with the miss's two Redis EVALSHAs (redis-py)" if redis else "")
    )


def report(label: str, samples: dict[str, list[float]]) -> None:
    direct, proxied = samples["direct"], samples["proxy"]
    diffs = [p - d for p, d in zip(proxied, direct, strict=True)]
    print(f"\n{label}: {len(direct)} requests each way")
    print(f"{'':<22}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}")
    rows = [("engine direct", direct), ("through proxy", proxied), ("difference (paired)", diffs)]
    for kind in ("search", "suggestions"):
        rows += [(f"{kind}: direct", samples[f"{kind} direct"]), (f"{kind}: proxy", samples[f"{kind} proxy"])]
    for name, values in rows:
        print(f"{name:<22}" + "".join(f"{percentile(values, p):>10.2f}" for p in (50, 95, 99)))
    added50 = percentile(proxied, 50) - percentile(direct, 50)
    added99 = percentile(proxied, 99) - percentile(direct, 99)
    ratio = statistics.median(proxied) / statistics.median(direct)
    print(
        f"added at p50: {added50:.2f} ms (goal ≤ 1)   added at p99: {added99:.2f} ms (goal ≤ 3)   "
        f"proxy/direct median ratio: {ratio:.2f}"
    )
    if samples.get("hit"):
        hits = samples["hit"]
        print(
            f"through a proxy with its cache on (HIT), {len(hits)} requests: "
            + "   ".join(f"p{p} {percentile(hits, p):.2f} ms" for p in (50, 95, 99))
        )


HELD = "vocabulary held"
COUNTING = "engine counts"


def record_figures(results: Results, label: str, samples: dict[str, list[float]], products: int) -> None:
    """The figures of one engine's run: latency against the goals, and what the proxy adds."""
    direct, proxied = samples["direct"], samples["proxy"]
    added50 = percentile(proxied, 50) - percentile(direct, 50)
    added99 = percentile(proxied, 99) - percentile(direct, 99)
    if label == "replay":
        results.add(
            "proxy overhead at p50, replay engine (engine cost removed)",
            added50,
            "ms",
            goal="≤ 1 ms",
            met=added50 <= 1.0,
            notes=f"{len(direct):,} requests each way, interleaved; proxy p50 {percentile(proxied, 50):.2f} ms, "
            f"engine (replay) direct p50 {percentile(direct, 50):.2f} ms",
        )
        results.add(
            "proxy overhead at p99, replay engine",
            added99,
            "ms",
            goal="≤ 3 ms",
            met=added99 <= 3.0,
            notes=f"proxy p99 {percentile(proxied, 99):.2f} ms, direct p99 {percentile(direct, 99):.2f} ms",
        )
        return
    at = f"{products:,} products"
    # Issue 24's goals.
    for kind, goal_ms in (("search", 50.0), ("suggestions", 20.0)):
        mine, theirs = samples[f"{kind} proxy"], samples[f"{kind} direct"]
        results.add(
            f"{kind} through the proxy (cache off), p99, {at}",
            percentile(mine, 99),
            "ms",
            baseline=percentile(theirs, 99),
            baseline_label="engine direct, same requests",
            goal=f"p99 < {goal_ms:.0f} ms",
            met=percentile(mine, 99) < goal_ms,
            notes=f"{len(mine):,} requests; p50 {percentile(mine, 50):.1f} ms (engine direct "
            f"{percentile(theirs, 50):.1f})",
        )
    results.add(
        "proxy overhead against the real engine, p50 (paired)",
        added50,
        "ms",
        notes=f"p99 {added99:+.2f} ms; median ratio proxy / direct "
        f"{statistics.median(proxied) / statistics.median(direct):.2f}",
    )
    if samples.get("search hit"):
        hits = samples["search hit"]
        results.add(
            f"search through the proxy, cache HIT, p99, {at}",
            percentile(hits, 99),
            "ms",
            baseline=percentile(samples["search direct"], 99),
            baseline_label="engine direct",
            notes=f"{len(hits):,} requests, interleaved with the two above; p50 {percentile(hits, 50):.2f} ms",
        )
    results.cdf(
        "latency-search.png",
        f"Search latency, one client, {at}: engine direct vs proxy (cache off: every request a miss) vs proxy "
        "cache HIT, same requests interleaved",
        "ms",
        {
            "engine direct": samples["search direct"],
            "proxy, miss (cache off)": samples["search proxy"],
            "proxy, cache HIT": samples.get("search hit", []),
        },
    )


# --- the engine's own profile ------------------------------------------------------------------

PROFILE_TOP = 4  # costs named per request of the mix


def _label(path: str, params: list[tuple[str, str]]) -> str:
    kind = "search" if path == "/api/search" else "suggest"
    return f"{kind} " + "&".join(f"{k}={v}" for k, v in params) if params else kind


def _short(description: str, limit: int = 90) -> str:
    return description if len(description) <= limit else description[: limit - 1] + "…"


def profile_costs(profile: dict[str, Any]) -> dict[str, Any]:
    """Where one ``"profile": true`` search spent its time, summed over shards: the query tree's
    total, rewrite and collectors, each aggregation, and the query's costliest clauses by their
    own time (less their children's), in ms; and two counts of work that load does not change:
    documents the query visited and per-document aggregation calls (every level)."""
    query_ms = rewrite_ms = collect_ms = 0.0
    visited = collects = 0
    aggs: dict[str, float] = {}
    leaves: dict[str, float] = {}
    for shard in profile.get("shards") or ():
        for search in shard.get("searches") or ():
            for root in search.get("query") or ():
                query_ms += root["time_in_nanos"] / 1e6
                breakdown = root.get("breakdown") or {}
                visited += breakdown.get("next_doc_count", 0) + breakdown.get("advance_count", 0)
                for node in _walk(root):
                    children = sum(c["time_in_nanos"] for c in node.get("children") or ())
                    own = (node["time_in_nanos"] - children) / 1e6
                    key = f"{node['type']} {_short(node.get('description', ''))}"
                    leaves[key] = leaves.get(key, 0.0) + own
            rewrite_ms += search.get("rewrite_time", 0) / 1e6
            for collector in search.get("collector") or ():
                collect_ms += collector["time_in_nanos"] / 1e6
        for agg in _flat_aggs(shard.get("aggregations") or ()):
            aggs[agg["description"]] = aggs.get(agg["description"], 0.0) + agg["time_in_nanos"] / 1e6
            collects += (agg.get("breakdown") or {}).get("collect_count", 0)
    top = sorted(leaves.items(), key=lambda kv: kv[1], reverse=True)[:PROFILE_TOP]
    return {
        # Work, not time: the same on a busy machine as on a quiet one.
        "docs_visited": visited,
        "agg_collects": collects,
        "query_ms": query_ms,
        "rewrite_ms": rewrite_ms,
        "collectors_ms": collect_ms,
        "aggregations_ms": sum(v for k, v in aggs.items() if "/" not in k),
        "aggregations": dict(sorted(aggs.items(), key=lambda kv: kv[1], reverse=True)[:PROFILE_TOP]),
        "clauses": dict(top),
    }


def _walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    out = [node]
    for child in node.get("children") or ():
        out += _walk(child)
    return out


def _flat_aggs(aggs: Sequence[dict[str, Any]], prefix: str = "") -> list[dict[str, Any]]:
    """Every profiled aggregation, a sub-aggregation named ``parent/child`` (its time is inside its parent's)."""
    out = []
    for agg in aggs:
        name = prefix + agg["description"]
        out.append({**agg, "description": name})
        out += _flat_aggs(agg.get("children") or (), name + "/")
    return out


async def engine_profile(
    engine_url: str, alias: str, runs: int, requests: list[tuple[str, list[tuple[str, str]], bytes]] | None = None
) -> list[dict[str, Any]]:
    """Per request of the mix (or of ``requests``): the engine's own ``took`` (median of ``runs``
    plain requests) and the costs of the median-``took`` one of ``runs`` profiled requests
    (``profile_costs``), plain and profiled alternating."""
    out = []
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        for path, params, body in requests or _requests():
            plain: list[float] = []
            profiled: list[tuple[float, dict[str, Any]]] = []
            with_profile = orjson.dumps({**orjson.loads(body), "profile": True})
            for _ in range(runs):
                for data, sink in ((body, None), (with_profile, profiled)):
                    async with session.post(f"{engine_url}/{alias}/_search", data=data, headers=headers) as response:
                        answer = orjson.loads(await response.read())
                        if response.status != 200:
                            raise RuntimeError(f"profile {path} {params}: {response.status} {answer}")
                    if sink is None:
                        plain.append(float(answer["took"]))
                    else:
                        sink.append((float(answer["took"]), answer["profile"]))
            profiled.sort(key=lambda pair: pair[0])
            took, profile = profiled[len(profiled) // 2]
            out.append(
                {
                    "request": _label(path, params),
                    "took_ms": statistics.median(plain),
                    "took_p90_ms": sorted(plain)[round(0.9 * (len(plain) - 1))],
                    "profiled_took_ms": took,
                    **profile_costs(profile),
                }
            )
    return out


def report_profile(rows: list[dict[str, Any]]) -> None:
    print("\nengine profile (per request of the mix; took = median engine took of plain runs, ms)")
    for row in rows:
        print(
            f"{row['request']:<60} took {row['took_ms']:6.1f} (p90 {row['took_p90_ms']:5.1f})  "
            f"visited {row['docs_visited']:>7}  agg calls {row['agg_collects']:>7}  "
            f"query {row['query_ms']:6.1f}  aggs {row['aggregations_ms']:6.1f}  "
            f"collect {row['collectors_ms']:6.1f}  rewrite {row['rewrite_ms']:5.1f}"
        )
        for name, ms in row["clauses"].items():
            print(f"{'':<8}{ms:7.2f}  {name}")
        for name, ms in row["aggregations"].items():
            print(f"{'':<8}{ms:7.2f}  agg {name}")


def record_profile(results: Results, rows: list[dict[str, Any]], products: int) -> None:
    """Each request's engine ``took`` as a figure, its costliest clauses and aggregations in the notes."""
    for row in rows:
        costs = [f"{name} {ms:.1f}" for name, ms in row["clauses"].items()]
        costs += [f"agg {name} {ms:.1f}" for name, ms in row["aggregations"].items()]
        results.add(
            f"engine took, {row['request']}, {products:,} products",
            row["took_ms"],
            "ms",
            notes=f"p90 {row['took_p90_ms']:.1f}; documents visited {row['docs_visited']:,}, aggregation "
            f"calls {row['agg_collects']:,}; profiled: query {row['query_ms']:.1f}, aggregations "
            f"{row['aggregations_ms']:.1f}, collectors {row['collectors_ms']:.1f} ms; top: " + "; ".join(costs),
        )
    results.meta["engine_profile"] = rows


# --- orchestration ---------------------------------------------------------------------------


async def record(engine_url: str, alias: str) -> bytes:
    """Every answer of the mix from the real engine, keyed by the body's hash, as JSON bytes."""
    answers: dict[str, str] = {}
    async with aiohttp.ClientSession() as session:
        async with session.get(engine_url + "/") as response:
            answers["__root__"] = (await response.read()).decode()
        # The proxy's read of the suggestions' vocabulary, answered for real too.
        for path, _, body in [*_requests(), ("", [], orjson.dumps(taxonomy_body()))]:
            async with session.post(
                f"{engine_url}/{alias}/_search", data=body, headers={"Content-Type": "application/json"}
            ) as response:
                answer = (await response.read()).decode()
            answers[hashlib.sha1(body).hexdigest()] = answer
            if path:
                answers.setdefault("__search__" if path == "/api/search" else "__suggest__", answer)
    return orjson.dumps(answers)


def start_proxy(env: dict[str, str], port: int, counted_to: Path | None = None) -> subprocess.Popen[bytes]:
    """A 1-worker proxy; ``counted_to``: under the call counter (``benchmarks/kit/counting.py``)."""
    module = ["proxy", "--port", str(port), "--workers", "1"]
    return start_server(module, f"http://127.0.0.1:{port}/healthz", env, counted_to=counted_to, timeout=30)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--products", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=60, help="passes over the 16-request mix per engine")
    parser.add_argument("--mode", choices=["both", "real", "replay"], default="both")
    parser.add_argument("--json", type=Path, help="also write the figures here (benchmarks/report.py reads them)")
    parser.add_argument(
        "--engine-profile",
        type=int,
        default=0,
        metavar="RUNS",
        help='real engine: also profile each request of the mix ("profile": true, RUNS times each): its took, '
        "its costliest clauses and aggregations, documents visited",
    )
    parser.add_argument(
        "--miss-profile",
        type=int,
        default=0,
        metavar="REQUESTS",
        help="replay engine: then send REQUESTS more misses to each proxy (no cache; cache with the limiter off, on) "
        "under py-spy and print where their time goes (needs root)",
    )
    parser.add_argument("--miss-profile-dir", type=Path, help="keep py-spy's raw stacks of --miss-profile here")
    parser.add_argument("--serve-replay", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_replay:
        serve_replay(args.serve_replay, args.port)
        return 0

    results = Results("proxy")
    results.meta["proxy"] = "1 worker, not pinned; client: one aiohttp connection pool, requests one at a time"
    try:
        with bench_catalog("proxy", args.products) as catalog:
            _measure(catalog, args, results)
    finally:
        if args.json:
            results.write(args.json)
    return 0


def _measure(catalog: BenchCatalog, args: argparse.Namespace, results: Results) -> None:
    urls, alias, children = catalog.urls, catalog.alias, catalog.children
    env = catalog.proxy_env(
        RATE_LIMIT_ENABLED="false",
        # What the proxy adds over the engine: every request must reach the engine.
        CACHE_ENABLED="false",
    )
    if args.mode in ("both", "real"):
        port = free_port()
        children.append(start_proxy(env, port))
        # The same requests answered from the cache, for the latency distributions.
        hit_port = free_port()
        children.append(start_proxy({**env, "CACHE_ENABLED": "true"}, hit_port))
        samples = asyncio.run(
            measure(
                urls.elasticsearch_node,
                alias,
                f"http://127.0.0.1:{port}",
                args.rounds,
                hit_url=f"http://127.0.0.1:{hit_port}",
            )
        )
        report(f"real engine ({args.products} products)", samples)
        record_figures(results, "real", samples, args.products)
        if args.engine_profile:
            rows = asyncio.run(engine_profile(urls.elasticsearch_node, alias, args.engine_profile))
            report_profile(rows)
            record_profile(results, rows, args.products)
        stop_process(children.pop())
        stop_process(children.pop())
        # Suggestions before and after the proxy held the fandom and category vocabulary.
        ports = {HELD: free_port(), COUNTING: free_port()}
        children.append(start_proxy(env, ports[HELD]))
        children.append(start_proxy({**env, "SUGGEST_TAXONOMY_REFRESH_S": "0"}, ports[COUNTING]))
        urls_by = {label: f"http://127.0.0.1:{port}" for label, port in ports.items()}
        suggested = asyncio.run(measure_suggestions(urls_by, args.rounds))
        record_suggestions(results, suggested, args.products)
        stop_process(children.pop())
        stop_process(children.pop())
    if args.mode in ("both", "replay"):
        recording = catalog.workdir / "replay.json"
        recording.write_bytes(asyncio.run(record(urls.elasticsearch_node, alias)))
        replay_port = free_port()
        replay_url = f"http://127.0.0.1:{replay_port}"
        serving = ["benchmarks.overhead", "--serve-replay", str(recording), "--port", str(replay_port)]
        replay = start_server(serving, replay_url + "/")
        children.append(replay)
        port = free_port()
        no_cache = start_proxy({**env, "ELASTICSEARCH_NODE": replay_url}, port)
        no_cache_url = f"http://127.0.0.1:{port}"
        children.append(no_cache)
        samples = asyncio.run(measure(replay_url, alias, no_cache_url, args.rounds * 4))
        report("replay engine (engine cost removed)", samples)
        record_figures(results, "replay", samples, args.products)
        # Cache misses as deployed: cache on (L1, L2 in Redis), limiter off and on; beside them
        # the proxy without its cache and the floors under it (issue 24): forwarders doing the
        # least an aiohttp (+ redis-py) proxy does, same requests, same rounds.
        targets: dict[str, tuple[str, str | None]] = {NO_CACHE: (no_cache_url, "BYPASS")}
        pids = {"direct": replay.pid, NO_CACHE: no_cache.pid}
        # Limited as deployed, with a bucket the bench's one client never runs dry (the default
        # limit answered it 429 within the run).
        limiters: dict[str, dict[str, str]] = {"limiter off": {}, "limiter on": BIG_BUCKET}
        cached: dict[str, dict[str, str]] = {}
        for n, (label, limiting) in enumerate(limiters.items()):
            cached[label] = {
                **env,
                "ELASTICSEARCH_NODE": replay_url,
                "CACHE_ENABLED": "true",
                **limiting,
                "REDIS_KEY_PREFIX": f"{alias}-{n}:",
            }
        bodies = catalog.workdir / "forwarded.json"
        sent_rounds = [*range(args.rounds + 2), *_miss_rounds(WARM_ROUND, WARM_MISSES)]
        sent_rounds += [*_miss_rounds(COUNTED_ROUND, COUNTED_MISSES), CHECK_ROUND, READY_ROUND]
        write_bodies(bodies, [request for n in sent_rounds for request in _miss_requests(n)])
        ready = request_target(*_miss_requests(READY_ROUND)[0][:2])
        search_url = f"{replay_url}/{alias}/_search"
        forwarding = partial(start_forwarder, bodies, search_url, ready)
        floors: dict[str, Starter] = {
            BARE: forwarding,
            WITH_REDIS: partial(
                forwarding, redis_url=urls.redis_url, cluster=urls.redis_cluster, prefix=f"{alias}-forwarder:"
            ),
            LOW_LEVEL: partial(forwarding, low_level=True),
        }
        timed: dict[str, Starter] = {f"miss, {label}": partial(proxy_at, e) for label, e in cached.items()}
        for label, start in (timed | floors | go_floors(catalog, bodies, search_url, ready, results)).items():
            proc, url = start(counted_to=None)
            children.append(proc)
            if label not in timed:
                asyncio.run(check_forwarder(label, url, search_url))
            targets[label] = (url, "MISS" if label in timed else None)
            pids[label] = proc.pid
        counted: dict[str, Starter] = {NO_CACHE: partial(proxy_at, {**env, "ELASTICSEARCH_NODE": replay_url})}
        for label, cached_env in cached.items():
            counted[f"proxy, {label}"] = partial(
                proxy_at, {**cached_env, "REDIS_KEY_PREFIX": f"{alias}-counted-{label}:"}
            )
        calls = count_misses(counted | floors, catalog.workdir, results)
        misses = asyncio.run(measure_misses(replay_url, alias, targets, args.rounds, pids))
        record_misses(results, misses)
        record_miss_cpu(results, misses)
        record_floors(results, misses, calls)
        if args.miss_profile:
            profiled = {"no cache": (no_cache_url, no_cache.pid)}
            profiled |= {label[6:]: (targets[label][0], pids[label]) for label in timed}
            profile_misses(profiled, args.miss_profile, args.miss_profile_dir)


if __name__ == "__main__":
    sys.exit(main())
