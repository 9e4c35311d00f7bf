"""Benchmark: throughput and p99 over time under the stress profile's shape, driven by wrk.

    python -m benchmarks.stress [--products 20000] [--peak 64] [--ramp 40] [--hold 100] [--down 20]
                                [--window 4] [--quick] [--urls 10000] [--against NAME=VALUE ...]

The ``stress`` load profile (``loadtest/profiles/stress.json``: ramp to 3 × the busy hour, hold, ramp
down) asks how the service degrades. Locust runs that profile with think times and reports one
summary, no time series, and one Python process cannot outrun a proxy; so this bench follows the
same shape, time-scaled, with ``wrk`` (C): a 1-worker proxy with its response cache on and the
rate limiter off, a Zipf mix (s = 1.1) of 10,000 distinct catalog searches (the cache bench's
URLs), and consecutive wrk runs of ``--window`` seconds whose connection count follows the
stages (up to ``--peak``). Each window gives req/s, p50/p99 and errors, so the run is a time
series, beside what the proxy's /metrics counted in it (X-Cache mix, misses by reason, engine
requests answered and failed, background refreshes, L1 size). Goals are the profile's: errors
< 1 % and p99 < 500 ms (its search threshold). The deepest window at the peak is given against
the peak's median (issue 24: the run dipped ~60 s in, one ``CACHE_TTL_S`` after the cold start).

``--against CACHE_REFRESH_AHEAD_MS=0`` starts a second proxy with those settings (and its own Redis
prefix) and alternates the windows between the two: a before/after under the same machine load,
which on a shared machine moves more than either figure.

The proxy is pinned to one CPU and wrk to the other where two are available; the engine,
Postgres and Redis share both. Everything listens on 127.0.0.1 and is stopped on exit; the
database and index it created are removed. Needs ``wrk`` (``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import re
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from benchmarks.kit.catalog import ZIPF_S, ZIPF_URLS, bench_catalog, build_urls
from benchmarks.kit.processes import pinning_cpus, start_hot_proxy
from benchmarks.kit.results import Results
from benchmarks.kit.scrape import ENGINE_CALLS, Samples, delta, metric, scrape_sync
from benchmarks.kit.wrk import run_wrk

ERROR_GOAL = 0.01
P99_GOAL_MS = 500.0
CACHE_RESPONSES = "search_proxy_cache_responses_total"
MISSES = "search_proxy_cache_misses_total"
REFRESHES = "search_proxy_cache_refreshes_total"
X_CACHE = ("hit", "stale", "miss", "bypass")
MISS_REASONS = ("absent", "expired", "changed", "blind")
DIP_SHARE = 0.75  # a window at the peak below this share of the peak's median counts as the dip


def zipf_script(paths: Sequence[str], seed: int, workdir: Path) -> Path:
    """A wrk script drawing ``paths`` (in rank order) with Zipf weights, seeded."""
    cumulative = list(itertools.accumulate(1 / (k**ZIPF_S) for k in range(1, len(paths) + 1)))
    table = ",\n".join(f'  "{path}"' for path in paths)  # urlencoded: no quotes or backslashes
    weights = ",".join(f"{c:.9g}" for c in cumulative)
    script = workdir / "zipf.lua"
    script.write_text(
        f"math.randomseed({seed})\nlocal paths = {{\n{table}\n}}\nlocal cum = {{{weights}}}\n"
        "local total = cum[#cum]\n"
        "request = function()\n"
        "  local r = math.random() * total\n"
        "  local lo, hi = 1, #cum\n"
        "  while lo < hi do\n"
        "    local mid = math.floor((lo + hi) / 2)\n"
        "    if cum[mid] < r then lo = mid + 1 else hi = mid end\n"
        "  end\n"
        "  return wrk.format(nil, paths[lo])\n"
        "end\n"
    )
    return script


def schedule(peak: int, ramp: float, hold: float, down: float, window: float) -> list[int]:
    """Connections per window: the profile's stages (up, hold, down), at least 1."""
    plan: list[int] = []
    t = 0.0
    total = ramp + hold + down
    while t < total:
        middle = t + window / 2
        if middle < ramp:
            share = middle / ramp
        elif middle < ramp + hold:
            share = 1.0
        else:
            share = max(0.0, 1 - (middle - ramp - hold) / down)
        plan.append(max(1, round(peak * share)))
        t += window
    return plan


@dataclass(frozen=True)
class Window:
    start: float  # seconds since the first window started
    connections: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # non-2xx answers and socket errors
    cache: CacheCounts


@dataclass(frozen=True)
class CacheCounts:
    """The proxy's own counters over one window, from /metrics read before and after it: what
    the cache did while throughput moved (issue 24: the dip ~60 s in)."""

    x_cache: dict[str, float]  # search answers by X-Cache value
    misses: dict[str, float]  # search_proxy_cache_misses_total by reason
    engine_calls: float  # the proxy's engine requests answered (fills and background refreshes)
    engine_failed: float  # engine requests that failed or that the engine guard shed
    refreshes: float  # background refreshes that ended in the window
    l1_entries: float  # at the window's end
    l1_mb: float

    @classmethod
    def between(cls, before: Samples, after: Samples) -> CacheCounts:
        return cls(
            {c: delta(before, after, CACHE_RESPONSES, route="search", cache=c) for c in X_CACHE},
            {r: delta(before, after, MISSES, route="search", reason=r) for r in MISS_REASONS},
            delta(before, after, ENGINE_CALLS, backend="elasticsearch"),
            delta(before, after, "search_proxy_backend_errors_total", backend="elasticsearch")
            + delta(before, after, "search_proxy_engine_skipped_total"),
            delta(before, after, REFRESHES),
            metric(after, "search_proxy_cache_l1_entries"),
            metric(after, "search_proxy_cache_l1_bytes") / 1e6,
        )

    def share(self, x_cache: str) -> float:
        return self.x_cache[x_cache] / max(1.0, sum(self.x_cache.values()))


def _errors(problems: str) -> int:
    return sum(int(n) for n in re.findall(r"(?:responses|connect|read|write|timeout)[:\s]+(\d+)", problems))


async def _urls(database_url: str, count: int, seed: int) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        return await build_urls(conn, count, seed)
    finally:
        await conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stress", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--products", type=int, default=20_000)
    parser.add_argument("--peak", type=int, default=64, help="wrk connections at the hold stage")
    parser.add_argument("--ramp", type=float, default=40.0, help="seconds from 1 connection to the peak")
    parser.add_argument("--hold", type=float, default=100.0, help="seconds at the peak")
    parser.add_argument("--down", type=float, default=20.0, help="seconds from the peak down")
    parser.add_argument("--window", type=int, default=4, help="seconds per wrk run (one point of the series)")
    parser.add_argument("--quick", action="store_true", help="10 s up, 24 s hold, 6 s down, 2 s windows")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--urls",
        type=int,
        default=ZIPF_URLS,
        help="distinct searches in the mix; fewer fill the cache within seconds even when a busy machine "
        "starves the engine, leaving the expiry one CACHE_TTL_S later as the engine's only demand",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here (benchmarks/report.py reads them)")
    parser.add_argument(
        "--against",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="also run a second proxy with these settings (e.g. CACHE_REFRESH_AHEAD_MS=0), its windows alternating "
        "with the first's: a before/after under the same machine load (the run takes twice as long)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.ramp, args.hold, args.down, args.window = 10.0, 24.0, 6.0, 2
    if shutil.which("wrk") is None:
        print("benchmarks.stress: wrk is not installed (apt-get update && apt-get install -y wrk)", file=sys.stderr)
        return 2
    results = Results("stress")
    windows: list[Window] = []
    others: list[Window] = []  # --against's proxy
    try:
        with bench_catalog("stress", args.products) as catalog:
            server_cpu, wrk_cpu = pinning_cpus()
            env = catalog.proxy_env(RATE_LIMIT_ENABLED="false", CACHE_ENABLED="true")
            children, database_url, workdir = catalog.children, catalog.database_url, catalog.workdir
            base = start_hot_proxy(env, server_cpu, children)  # 1 worker, pinned, following the catalog
            proxies = [(base, windows, "")]
            if args.against:
                # Its own Redis prefix: the two proxies share no L2 entry.
                other = {**env, "REDIS_KEY_PREFIX": env["REDIS_KEY_PREFIX"] + "against:"}
                other.update(setting.split("=", 1) for setting in args.against)
                proxies.append((start_hot_proxy(other, server_cpu, children), others, " ".join(args.against)))
            script = zipf_script(asyncio.run(_urls(database_url, args.urls, args.seed)), args.seed, workdir)
            plan = schedule(args.peak, args.ramp, args.hold, args.down, args.window)
            pinning = f"proxy on CPU {server_cpu}, wrk on CPU {wrk_cpu}" if server_cpu is not None else "not pinned"
            results.meta["load"] = (
                f"1-worker proxy, cache on, limiter off; wrk -t1, Zipf (s = {ZIPF_S}) over {args.urls:,} searches, "
                f"{args.products:,} products; {args.ramp:g} s up to {args.peak} connections, {args.hold:g} s hold, "
                f"{args.down:g} s down, {args.window} s windows; {pinning}; the cache starts cold"
            )
            print(
                f"stress: {len(plan)} windows of {args.window} s, connections 1 → {args.peak} → 1; {pinning}",
                flush=True,
            )
            print(
                f"{'t (s)':>7} {'conns':>6} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
                f"{'hit %':>6} {'stale %':>7} {'miss %':>6} {'engine/s':>8} {'failed/s':>8} {'refresh/s':>9} "
                f"{'expired':>7} {'absent':>6} {'changed':>7} {'L1':>6} {'L1 MB':>6}"
            )
            began = time.monotonic()
            before = {url: scrape_sync(url) for url, _, _ in proxies}
            for connections in plan:
                for url, series, label in proxies:
                    start = time.monotonic() - began
                    run = run_wrk(url + "/api/search", args.window, wrk_cpu, script, connections)
                    after = scrape_sync(url)
                    cache = CacheCounts.between(before[url], after)
                    before[url] = after
                    window = Window(
                        start, connections, run.rps, run.p50_ms, run.p99_ms, run.requests, _errors(run.problems), cache
                    )
                    series.append(window)
                    print(
                        f"{start:>7.1f} {connections:>6} {run.rps:>9,.0f} {run.p50_ms:>8.2f} {run.p99_ms:>8.2f} "
                        f"{window.errors:>7} {100 * cache.share('hit'):>6.1f} {100 * cache.share('stale'):>7.2f} "
                        f"{100 * cache.share('miss'):>6.2f} {cache.engine_calls / args.window:>8.0f} "
                        f"{cache.engine_failed / args.window:>8.0f} "
                        f"{cache.refreshes / args.window:>9.0f} {cache.misses['expired']:>7.0f} "
                        f"{cache.misses['absent']:>6.0f} {cache.misses['changed']:>7.0f} {cache.l1_entries:>6.0f} "
                        f"{cache.l1_mb:>6.1f} {label}",
                        flush=True,
                    )
            _record(results, windows, args)
            if others:
                _record_against(results, windows, others, " ".join(args.against), args)
    finally:
        if args.json:
            results.write(args.json)
    return 0


def _dip(windows: list[Window], peak: int) -> tuple[float, Window, list[Window]]:
    """The median req/s at the peak, its deepest window and the windows under DIP_SHARE of it."""
    held = [w for w in windows if w.connections == peak] or windows
    plateau = statistics.median(w.rps for w in held)
    return plateau, min(held, key=lambda w: w.rps), [w for w in held if w.rps < DIP_SHARE * plateau]


def _record_against(
    results: Results, windows: list[Window], others: list[Window], label: str, args: argparse.Namespace
) -> None:
    """--against: the second proxy's dip beside the first's, each against its own median."""
    for name, series in (("default settings", windows), (label, others)):
        plateau, deepest, low = _dip(series, args.peak)
        print(
            f"{name}: median {plateau:,.0f} req/s at the peak, deepest {deepest.rps / plateau:.2f} × at "
            f"{deepest.start:.0f} s, {len(low) * args.window} s under {DIP_SHARE:.0%}; misses {_misses(series)}"
        )
    plateau, deepest, low = _dip(others, args.peak)
    results.add(
        f"deepest window at the peak, {label} (windows alternating with the default proxy's)",
        deepest.rps,
        "req/s",
        baseline=plateau,
        baseline_label="its median at the peak, same run",
        notes=f"at {deepest.start:.0f} s; {len(low) * args.window} s of windows under {DIP_SHARE:.0%} of the "
        f"median; misses by reason: {_misses(others)}",
    )
    results.series(
        "stress-against.png",
        f"Stress shape, default proxy vs {label}, windows alternating: throughput and hit share",
        [w.start + args.window / 2 for w in windows],
        "seconds",
        [
            ("req/s", {"default": [w.rps for w in windows], label: [w.rps for w in others]}),
            (
                "HIT share",
                {"default": [w.cache.share("hit") for w in windows], label: [w.cache.share("hit") for w in others]},
            ),
            (
                "expired misses per second",
                {
                    "default": [w.cache.misses["expired"] / args.window for w in windows],
                    label: [w.cache.misses["expired"] / args.window for w in others],
                },
            ),
        ],
    )


def _misses(windows: list[Window]) -> str:
    return " ".join(f"{r} {sum(w.cache.misses[r] for w in windows):,.0f}" for r in MISS_REASONS)


def _record(results: Results, windows: list[Window], args: argparse.Namespace) -> None:
    held = [w for w in windows if w.connections == args.peak] or windows
    requests = sum(w.requests for w in windows)
    errors = sum(w.errors for w in windows)
    worst = max(held, key=lambda w: w.p99_ms)
    print(
        f"\nat {args.peak} connections: median {statistics.median(w.rps for w in held):,.0f} req/s, p99 median "
        f"{statistics.median(w.p99_ms for w in held):.1f} ms, worst {worst.p99_ms:.1f} ms; errors {errors:,} of "
        f"{requests:,}"
    )
    results.add(
        f"throughput at the peak ({args.peak} connections), median of {len(held)} windows",
        statistics.median(w.rps for w in held),
        "req/s",
        notes=f"min {min(w.rps for w in held):,.0f}, max {max(w.rps for w in held):,.0f} req/s; no baseline: "
        "the cache bench measures the same proxy's hits against a bare aiohttp app",
    )
    # Issue 24: the run dipped ~60 s in (one CACHE_TTL_S after the cold start); its depth and width
    # against the same run's plateau, so runs on a busy and a quiet machine compare.
    plateau, deepest, low = _dip(windows, args.peak)
    print(
        f"deepest window {deepest.rps:,.0f} req/s at {deepest.start:.0f} s ({deepest.rps / plateau:.2f} × the median); "
        f"{len(low) * args.window} s under {DIP_SHARE:.0%} of it; misses {_misses(windows)}"
    )
    results.add(
        f"deepest window at the peak ({args.peak} connections)",
        deepest.rps,
        "req/s",
        baseline=plateau,
        baseline_label="median of the windows at the peak, same run",
        notes=f"at {deepest.start:.0f} s; {len(low) * args.window} s of windows under {DIP_SHARE:.0%} of the median"
        + (f" (from {low[0].start:.0f} s)" if low else "")
        + f"; misses by reason over the run: {_misses(windows)}",
    )
    p99 = statistics.median(w.p99_ms for w in held)
    results.add(
        f"p99 at the peak ({args.peak} connections), median of windows",
        p99,
        "ms",
        goal=f"p99 < {P99_GOAL_MS:.0f} ms (the stress profile's search threshold)",
        met=p99 < P99_GOAL_MS,
        notes=f"worst window {worst.p99_ms:.1f} ms at {worst.start:.0f} s",
    )
    results.add(
        "errors (non-2xx and socket errors) over the run",
        100 * errors / max(requests, 1),
        "%",
        goal=f"< {ERROR_GOAL:.0%}",
        met=errors / max(requests, 1) < ERROR_GOAL,
        notes=f"{errors:,} of {requests:,} requests",
    )
    results.series(
        "stress-over-time.png",
        f"Stress shape with wrk (1-worker proxy, cache on, Zipf mix): throughput and p99 per {args.window} s window",
        [w.start + args.window / 2 for w in windows],
        "seconds",
        [
            ("req/s", {"req/s": [w.rps for w in windows]}),
            (
                "latency (ms)",
                {
                    "p99": [w.p99_ms for w in windows],
                    "p50": [w.p50_ms for w in windows],
                },
            ),
            (
                "share of answers (X-Cache)",
                {c.upper(): [w.cache.share(c) for w in windows] for c in ("hit", "stale", "miss")},
            ),
            (
                "per second",
                {
                    "engine requests": [w.cache.engine_calls / args.window for w in windows],
                    "engine failed or shed": [w.cache.engine_failed / args.window for w in windows],
                    "expired misses": [w.cache.misses["expired"] / args.window for w in windows],
                    "refreshes": [w.cache.refreshes / args.window for w in windows],
                },
            ),
            ("L1 entries", {"entries": [w.cache.l1_entries for w in windows]}),
            ("wrk connections", {"connections": [float(w.connections) for w in windows]}),
        ],
    )


if __name__ == "__main__":
    sys.exit(main())
