"""Benchmark: what the rate limiter costs on the proxy's hottest path, a cache hit.

    python -m benchmarks.ratelimit [--products 2000] [--rounds 3] [--seconds 8]

One run, one machine: a 1-worker proxy with rate limiting off, and the same with it on (a
bucket too large to run dry, so every answer is a 200), serving one cached search to ``wrk``
(50 connections, pinned to the other core). Twice with the limiter on: every request from one
client (one hot bucket), and every request from a different client among 10,000 (a wrk script
sends a random ``X-Forwarded-For`` from a trusted peer) — many cold buckets, each decided in
Redis, in batches (``proxy/ratelimit/batch.py``). Rounds alternate the three so machine noise
hits all alike. Prints req/s, p50/p99, the ratio on/off for each, and the latency the limiter
adds. Goal (issue 10): on ≥ 0.85 × off.
Needs ``wrk`` (``apt-get install -y wrk``). Everything listens on 127.0.0.1 and is stopped on exit.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.kit.catalog import BenchCatalog, bench_catalog
from benchmarks.kit.processes import HOT_URL, pinning_cpus, start_hot_proxy
from benchmarks.kit.results import Results
from benchmarks.kit.wrk import WrkRun, run_wrk

GOAL = 0.85
CLIENTS = 10_000
# A random client per request, as a trusted proxy in front would report it.
MANY_CLIENTS_LUA = f"""
math.randomseed(42)
request = function()
  local n = math.random(0, {CLIENTS - 1})
  local address = string.format("10.%d.%d.%d", math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  return wrk.format(nil, nil, {{["X-Forwarded-For"] = address}})
end
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ratelimit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--products", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the figures here (benchmarks/report.py reads them)")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("benchmarks.ratelimit: wrk is not installed (apt-get update && apt-get install -y wrk)", file=sys.stderr)
        return 2
    results = Results("ratelimit")
    try:
        with bench_catalog("ratelimit", args.products) as catalog:
            _measure(catalog, args, results)
    finally:
        if args.json:
            results.write(args.json)
    return 0


def _measure(catalog: BenchCatalog, args: argparse.Namespace, results: Results) -> None:
    server_cpu, wrk_cpu = pinning_cpus()
    children = catalog.children
    common = catalog.proxy_env(TRUSTED_PROXIES="127.0.0.1/32")
    big_bucket = {"RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_MAX": "1000000000", "RATE_LIMIT_TTL": "1000"}
    off = start_hot_proxy({**common, "RATE_LIMIT_ENABLED": "false"}, server_cpu, children)
    on = start_hot_proxy({**common, **big_bucket}, server_cpu, children)
    script = catalog.workdir / "many_clients.lua"
    script.write_text(MANY_CLIENTS_LUA)
    targets = {
        "limiter off": (off, None),
        "limiter on, one client": (on, None),
        f"limiter on, {CLIENTS:,} clients": (on, script),
    }
    runs: dict[str, list[WrkRun]] = {name: [] for name in targets}
    for _ in range(args.rounds):
        for name, (base, lua) in targets.items():
            runs[name].append(run_wrk(base + HOT_URL, args.seconds, wrk_cpu, lua))
    print(f"\n{'GET ' + HOT_URL + ' (cache hit), 1 worker, wrk -c50':<44} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    median = {name: statistics.median(r.rps for r in rs) for name, rs in runs.items()}
    for name, rs in runs.items():
        p50 = statistics.median(r.p50_ms for r in rs)
        p99 = statistics.median(r.p99_ms for r in rs)
        problems = "; ".join(r.problems for r in rs if r.problems)
        print(f"{name:<44} {median[name]:>9,.0f} {p50:>8.2f} {p99:>8.2f} {problems}")
    base_p50 = statistics.median(r.p50_ms for r in runs["limiter off"])
    base_p99 = statistics.median(r.p99_ms for r in runs["limiter off"])
    print()
    for name in list(targets)[1:]:
        ratio = median[name] / median["limiter off"]
        added50 = statistics.median(r.p50_ms for r in runs[name]) - base_p50
        added99 = statistics.median(r.p99_ms for r in runs[name]) - base_p99
        met = "met" if ratio >= GOAL else "NOT met"
        print(f"{name}: {ratio:.2f} x off (goal >= {GOAL}: {met}); adds p50 {added50:+.2f} ms, p99 {added99:+.2f} ms")
        results.add(
            f"cache-hit throughput, {name}",
            median[name],
            "req/s",
            baseline=median["limiter off"],
            baseline_label="limiter off, same proxy build",
            goal=f"≥ {GOAL} × off",
            met=ratio >= GOAL,
            notes=f"adds p50 {added50:+.2f} ms, p99 {added99:+.2f} ms; {args.rounds} x {args.seconds} s, alternating",
        )
    pinning = f"proxy on CPU {server_cpu}, wrk on CPU {wrk_cpu}" if server_cpu is not None else "not pinned"
    results.meta["load"] = f"1-worker proxies, wrk -t1 -c50 on {HOT_URL}; {pinning}"


if __name__ == "__main__":
    sys.exit(main())
