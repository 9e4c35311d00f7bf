"""Benchmark: what the rate limiter costs on the proxy's hottest path, a cache hit.

    python -m benchmarks.ratelimit [--products 2000] [--rounds 3] [--seconds 8] [--cluster] [--go]

One run, one machine: a 1-worker proxy with rate limiting off, and the same with it on (a
bucket too large to run dry, so every answer is a 200), serving one cached search to ``wrk``
(50 connections, pinned to the other core). Twice with the limiter on: every request from one
client (one hot bucket), and every request from a different client among 10,000 (a wrk script
sends a random ``X-Forwarded-For`` from a trusted peer) — many cold buckets: each client's
first request (in a lease's lifetime) is decided in Redis, in batches
(``proxy/ratelimit/batch.py``), and brings a lease that serves its next ones. How many requests
that is depends on how often each client comes back, so on the throughput itself: at 2,000
req/s each of the 10,000 clients is seen every 5 s, at 17,000 every 0.6 s. The many clients' run is held
against the limiter off serving the same script's requests (their X-Forwarded-For, wrk's script per
request): 0.94 × the plain off's req/s on 2026-12-06, a confound the ratio leaves out. Rounds alternate
them so machine noise hits all alike. Prints req/s, p50/p99, the ratio on/off for each, and the latency the limiter
adds. Goal (issue 10): on ≥ 0.85 × off. Redis (and each cluster node) runs on wrk's core, for
every run, limiter on and off alike: in production it has a machine of its own, and on the
proxy's core its work for the limiter was charged to the proxy (issue 24); ``--redis-beside-proxy``
leaves it unpinned, as the figures before 2026-12-06's second run were taken.

``--go`` (issue 24) adds, in the same alternating rounds on the same Redis, a Go server doing the
same work (``benchmarks/kit/goforwarder/hits.go``, net/http + go-redis): the proxy's answer to the
hot search as fixed bytes, limiter off, and limiter on as ``proxy.ratelimit`` does it — identity
from a trusted peer's ``X-Forwarded-For``, remembered; leases of 5 % answering a client's next
requests for 10 s; cold decisions in batches of the same Lua script, on the same keys; the five
rate-limit headers — every term from the proxy's own settings and modules
(``benchmarks.kit.gohits.write_hit_plan``, which lists where it differs). Pinned to the proxy's
core with ``GOMAXPROCS=1``: one core, as the 1-worker proxy has. Its ratio on ÷ off (one client,
10,000 clients) and its CPU per answer are what "a limiter that is not Python" would cost, measured
beside the proxy's. Before timing, each Go server must answer the proxy's bytes, and the limited one
its headers and a bucket in Redis. Without ``go`` (or if the build or that check fails) the bench
says why, records it, and goes on without them.

``--profile DIR`` (issue 24): after the rounds, one more wrk run per proxy with py-spy sampling
it (``benchmarks/kit/profiling.py``): the raw samples of each in DIR (speedscope.app reads them), and
a summary printed and written to ``DIR/summary.txt`` — the share of samples in the limiter's
parts (identity, lease check, batching, the script call, redis-py, headers, metrics) and the
heaviest functions, with what the Redis server did meanwhile per 1,000 requests (its CPU, the
decisions and the script calls).

``--cluster`` (issue 22) adds, in the same run, the same three proxies on a Redis Cluster (3
primaries + 3 replicas of real redis-server on loopback, ``REDIS_CLUSTER=true``; the 10,000
clients' buckets spread over all slots), alternating with the single-Redis ones; then a
primary's failover: a cluster proxy under a steady load of one hot client (a bucket below the
lease threshold, refilled every millisecond: every decision in Redis), the primary owning
that client's slot SIGKILLed, and measured: the time until the limiter is back on Redis (its
fallback gauge back at 0 after it rose), answers slower than ``REDIS_TIMEOUT_MS`` (before and
after the kill, same length of time), and 5xx answers (goal 0).
Needs ``wrk`` (``apt-get install -y wrk``). Everything listens on 127.0.0.1 and is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import redis

from benchmarks.kit import profiling
from benchmarks.kit.catalog import BenchCatalog, bench_catalog
from benchmarks.kit.cluster import on_cluster, redis_cluster, redis_work
from benchmarks.kit.counting import Calls, counting
from benchmarks.kit.forwarder import GoUnavailable, build_go_forwarder
from benchmarks.kit.gohits import proxy_answer, start_go_hits, write_hit_plan
from benchmarks.kit.processes import BIG_BUCKET, HOT_URL, pin_redis, pinning_cpus, start_hot_proxy
from benchmarks.kit.results import Results
from benchmarks.kit.scrape import metric, scrape, scrape_sync
from benchmarks.kit.stack import RedisClusterServers
from benchmarks.kit.wrk import WrkRun, many_clients_lua, run_wrk, run_wrk_costed
from catalog.processes import stop_process
from catalog.redis_client import slot_of
from proxy.ratelimit.bucket import Bucket, Decision
from proxy.ratelimit.headers import rate_limit_headers
from proxy.ratelimit.limiter import LEASE_SECONDS
from proxy.ratelimit.script import bucket_key
from proxy.settings import ProxySettings

GOAL = 0.85
CLIENTS = 10_000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ratelimit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--products", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the figures here (benchmarks/report.py reads them)")
    parser.add_argument("--cluster", action="store_true", help="also on a Redis Cluster, and a primary's failover")
    parser.add_argument(
        "--go",
        action="store_true",
        help="also a Go server doing the same work, limiter off and on, in the same rounds (needs go)",
    )
    parser.add_argument(
        "--redis-beside-proxy",
        action="store_true",
        help="leave Redis unpinned, sharing the proxy's core (by default it runs on wrk's core, off the proxy's)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="after the rounds, one more wrk run per proxy under py-spy: its samples into DIR, a summary printed",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        print("benchmarks.ratelimit: wrk is not installed (apt-get update && apt-get install -y wrk)", file=sys.stderr)
        return 2
    if args.profile is not None and (why := profiling.available()) is not None:
        print(f"benchmarks.ratelimit: --profile: {why}", file=sys.stderr)
        return 2
    results = Results("ratelimit")
    # Run alone, the report's rule: above one load per core, no goal is claimed from these figures.
    results.meta["load average at the start"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        with bench_catalog("ratelimit", args.products) as catalog:
            if not args.cluster:
                _measure(catalog, args, results)
            else:
                with redis_cluster(catalog.workdir, catalog.children) as cluster:
                    _measure(catalog, args, results, cluster)
                    _measure_failover(catalog, cluster, results)
    finally:
        results.meta["load average at the end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        if args.json:
            results.write(args.json)
    return 0


# The failover's: below LEASE_MIN_CAPACITY, so every decision is made in Redis (a lease of the big
# bucket lasts 10 s and outlasted the failover: the limiter never asked Redis, the figure was nan),
# and refilled every millisecond, so it never runs dry either.
EXACT_BUCKET = {"RATE_LIMIT_ENABLED": "true", "RATE_LIMIT_MAX": "99", "RATE_LIMIT_TTL": "1"}


def _measure(
    catalog: BenchCatalog, args: argparse.Namespace, results: Results, cluster: RedisClusterServers | None = None
) -> None:
    server_cpu, wrk_cpu = pinning_cpus()
    children = catalog.children
    # Redis on wrk's core for every run, limiter on and off alike: beside the proxy, its work
    # for the limiter was charged to the proxy (module docstring), where in production Redis
    # has a machine of its own.
    redis_cpu = None if args.redis_beside_proxy else wrk_cpu
    redis_urls = [catalog.urls.redis_url] + ([] if cluster is None else [node.url for node in cluster.nodes])
    pinned_redis = pin_redis(redis_urls, redis_cpu)
    common = catalog.proxy_env(TRUSTED_PROXIES="127.0.0.1/32")
    off_env, on_env = {**common, "RATE_LIMIT_ENABLED": "false"}, {**common, **BIG_BUCKET}
    off = start_hot_proxy(off_env, server_cpu, children)
    on = start_hot_proxy(on_env, server_cpu, children)
    pids = {off: children[-2].pid, on: children[-1].pid}
    go = _start_go(catalog, off, off_env, on_env, server_cpu, results) if args.go else None
    env_of = {off: off_env, on: on_env}
    script = catalog.workdir / "many_clients.lua"
    script.write_text(many_clients_lua(CLIENTS))
    targets = {
        "limiter off": (off, None),
        "limiter on, one client": (on, None),
        f"limiter off, {CLIENTS:,} clients": (off, script),
        f"limiter on, {CLIENTS:,} clients": (on, script),
    }
    if cluster is not None:
        cluster_common = on_cluster(common, cluster)
        cluster_off_env = {**cluster_common, "RATE_LIMIT_ENABLED": "false"}
        cluster_on_env = {**cluster_common, **BIG_BUCKET}
        cluster_off = start_hot_proxy(cluster_off_env, server_cpu, children)
        cluster_on = start_hot_proxy(cluster_on_env, server_cpu, children)
        pids |= {cluster_off: children[-2].pid, cluster_on: children[-1].pid}
        env_of |= {cluster_off: cluster_off_env, cluster_on: cluster_on_env}
        targets |= {
            "Redis Cluster: limiter off": (cluster_off, None),
            "Redis Cluster: limiter on, one client": (cluster_on, None),
            f"Redis Cluster: limiter off, {CLIENTS:,} clients": (cluster_off, script),
            f"Redis Cluster: limiter on, {CLIENTS:,} clients": (cluster_on, script),
        }
    timed = dict(targets)
    if go is not None:
        (go_off, go_on), go_pids = go
        pids |= go_pids
        timed |= {
            f"{GO}limiter off": (go_off, None),
            f"{GO}limiter on, one client": (go_on, None),
            f"{GO}limiter off, {CLIENTS:,} clients": (go_off, script),
            f"{GO}limiter on, {CLIENTS:,} clients": (go_on, script),
        }
    redis_nodes = {
        name: [node.url for node in cluster.nodes]
        if cluster is not None and name.startswith("Redis Cluster")
        else [catalog.urls.redis_url]
        for name in timed
    }
    runs: dict[str, list[WrkRun]] = {name: [] for name in timed}
    # The proxy's own CPU per answer (its process tree's, from /proc): on a machine shared with
    # other work, req/s tells how much CPU the proxy got as much as what it costs; this does not.
    cpu_us: dict[str, list[float]] = {name: [] for name in timed}
    # The limited many clients' runs: decisions in Redis and the script calls that carried them.
    decided: dict[str, list[tuple[int, int]]] = {}
    for _ in range(args.rounds):
        for name, (base, lua) in timed.items():
            counted = lua is not None and "limiter on" in name
            work_before = redis_work(redis_nodes[name]) if counted else None
            run, cpu_per_answer = run_wrk_costed(base + HOT_URL, args.seconds, wrk_cpu, pids[base], lua)
            cpu_us[name].append(cpu_per_answer)
            runs[name].append(run)
            if work_before is not None:
                _, evalsha, decisions = redis_work(redis_nodes[name])
                decided.setdefault(name, []).append((decisions - work_before[2], evalsha - work_before[1]))
    print(
        f"\n{'GET ' + HOT_URL + ' (cache hit), 1 worker, wrk -c50':<44} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'CPU us/req':>10}"
    )
    median = {name: statistics.median(r.rps for r in rs) for name, rs in runs.items()}
    cpu = {name: statistics.median(values) for name, values in cpu_us.items()}
    for name, rs in runs.items():
        p50 = statistics.median(r.p50_ms for r in rs)
        p99 = statistics.median(r.p99_ms for r in rs)
        problems = "; ".join(r.problems for r in rs if r.problems)
        print(f"{name:<44} {median[name]:>9,.0f} {p50:>8.2f} {p99:>8.2f} {cpu[name]:>10.1f} {problems}")
    print()
    for name in timed:
        # Each "on" against the "off" on the same Redis (one server, or the cluster), Go against Go.
        off_name = _off_name(name)
        if name == off_name:
            continue
        is_go = name.startswith(GO)
        base_p50 = statistics.median(r.p50_ms for r in runs[off_name])
        base_p99 = statistics.median(r.p99_ms for r in runs[off_name])
        ratio = median[name] / median[off_name]
        added50 = statistics.median(r.p50_ms for r in runs[name]) - base_p50
        added99 = statistics.median(r.p99_ms for r in runs[name]) - base_p99
        met = "met" if ratio >= GOAL else "NOT met"
        by_cpu = cpu[off_name] / cpu[name]  # the throughput the proxy's CPU allows, on / off
        in_redis = ""
        if name in decided:
            in_redis = (
                f"; {statistics.median(d for d, _ in decided[name]):,.0f} decisions in Redis in "
                f"{statistics.median(c for _, c in decided[name]):,.0f} EVALSHA per run (median)"
            )
        server = "the Go server's" if is_go else "the proxy's"
        print(
            f"{name}: {ratio:.2f} x off (goal >= {GOAL}: {met}); adds p50 {added50:+.2f} ms, p99 {added99:+.2f} ms;"
            f" by {server} CPU per answer: {by_cpu:.2f} x off ({cpu[name]:.1f} against {cpu[off_name]:.1f} us)"
            + in_redis
        )
        # The Go server's figures are the question ("a limiter that is not Python"), not
        # the proxy's goal: no goal is claimed for them.
        build = "Go server" if is_go else "proxy build"
        results.add(
            f"cache-hit throughput, {name}",
            median[name],
            "req/s",
            baseline=median[off_name],
            baseline_label=f"{off_name}, same {build}",
            goal="" if is_go else f"≥ {GOAL} × off",
            met=None if is_go else ratio >= GOAL,
            notes=(GO_NOTE if is_go else "")
            + f"adds p50 {added50:+.2f} ms, p99 {added99:+.2f} ms; {args.rounds} x {args.seconds} s, alternating; "
            + ("Redis on wrk's core" if pinned_redis else "Redis unpinned")
            + in_redis,
        )
        results.add(
            f"{'Go server' if is_go else 'proxy'} CPU per cache hit, {name}",
            cpu[name],
            "µs",
            baseline=cpu[off_name],
            baseline_label=f"{off_name}, same {build}",
            ratio=by_cpu,  # as the throughput ratio: off's CPU per answer ÷ on's
            goal="" if is_go else f"off ÷ on ≥ {GOAL}",
            met=None if is_go else by_cpu >= GOAL,
            notes=f"{server} process tree's CPU over the answers it gave (median of the rounds): what the "
            f"limiter costs {'it' if is_go else 'the proxy'}, whatever CPU the shared machine left it",
        )
    pinning = f"proxy on CPU {server_cpu}, wrk on CPU {wrk_cpu}" if server_cpu is not None else "not pinned"
    if pinned_redis:
        pinning += f"; Redis ({len(pinned_redis)} redis-server) on CPU {redis_cpu} with wrk, for every run"
    else:
        pinning += "; Redis unpinned (shares the proxy's core)"
    if go is not None:
        pinning += "; the Go hit servers on the proxy's CPU, GOMAXPROCS=1"
    results.meta["load"] = f"1-worker proxies, wrk -t1 -c50 on {HOT_URL}; {pinning}"
    print(results.meta["load"])
    _count_calls(
        catalog, {name: (env_of[base], lua, redis_nodes[name]) for name, (base, lua) in targets.items()}, results
    )
    if args.profile is not None:
        redis_of = {name: None if name.startswith("Redis Cluster") else catalog.urls.redis_url for name in targets}
        profiled = {name: (pids[base], base, lua, redis_of[name]) for name, (base, lua) in targets.items()}
        _profile(args.profile, profiled, args.seconds)


GO = "Go: "
GO_NOTE = (
    "a Go server (net/http + go-redis, GOMAXPROCS=1, on the proxy's core) answering the proxy's bytes and "
    "doing the limiter's work as proxy.ratelimit does (benchmarks/kit/goforwarder/hits.go): what a limiter "
    "that is not Python costs, not the proxy's figure; "
)
# A client of the Go check, none of the wrk script's 10.x.y.z.
GO_PROBE_CLIENT = "192.0.2.77"


def _start_go(
    catalog: BenchCatalog,
    python_off: str,
    off_env: dict[str, str],
    on_env: dict[str, str],
    cpu: int | None,
    results: Results,
) -> tuple[tuple[str, str], dict[str, int]] | None:
    """The Go hit servers (``--go``), limiter off and on, serving the proxy's answer at
    ``python_off``: their base URLs and pids, once each answered the proxy's bytes and the limited
    one its rate-limit headers and a bucket in Redis. None when Go is missing, the build fails or
    a check does: the reason printed and in ``results.meta``."""
    reason: str | None
    try:
        binary = build_go_forwarder(catalog.workdir)
    except GoUnavailable as unavailable:
        reason = str(unavailable)
    else:
        body, headers = proxy_answer(python_off + HOT_URL)
        settings = ProxySettings.from_env(on_env)
        prefix = f"{catalog.alias}-go:"  # buckets apart from the proxy's
        plans = [catalog.workdir / f"go-hits-{state}.json" for state in ("off", "on")]
        write_hit_plan(plans[0], HOT_URL, body, headers, ProxySettings.from_env(off_env))
        write_hit_plan(plans[1], HOT_URL, body, headers, settings, prefix=prefix)
        bases: dict[str, int] = {}
        try:
            for plan, redis_url in zip(plans, (None, catalog.urls.redis_url), strict=True):
                proc, base = start_go_hits(binary, plan, HOT_URL, redis_url=redis_url, cpu=cpu)
                catalog.children.append(proc)
                bases[base] = proc.pid
        except RuntimeError as failed:  # it exited, or never answered
            reason = f"the Go hit server did not start: {failed}"
        else:
            off, on = bases
            key = bucket_key(prefix, "ip:" + GO_PROBE_CLIENT, settings.rate_limit_key_groups)
            reason = _go_check(off, on, body, catalog.urls.redis_url, key)
            if reason is None:
                results.meta["Go hit server"] = "built, answered the proxy's bytes and decided in Redis"
                return (off, on), bases
    print(f"benchmarks.ratelimit: --go: no Go figures: {reason}", file=sys.stderr)
    results.meta["Go hit server"] = f"not measured: {reason}"
    return None


# The rate-limit headers' names, as proxy.ratelimit.headers writes them.
_LIMIT_HEADERS = tuple(rate_limit_headers("default", 1, 1, Decision(True, 0, 0, 0, Bucket(0.0, 0))))


def _go_check(off: str, on: str, body: bytes, redis_url: str, key: str) -> str | None:
    """What is wrong with the Go hit servers at ``off`` and ``on``, or None: each must answer
    :data:`HOT_URL` 200 with the proxy's ``body``; the limited one, for a client it never saw, with
    the rate-limit headers, after a decision in Redis (its bucket at ``key``)."""
    for base, limited in ((off, False), (on, True)):
        headers = {"X-Forwarded-For": GO_PROBE_CLIENT} if limited else {}
        request = urllib.request.Request(base + HOT_URL, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            status, answered, sent = response.status, response.read(), response.headers
        if status != 200 or answered != body:
            return f"the Go server at {base} answered {status} with {len(answered)} bytes, not the proxy's {len(body)}"
        missing = [name for name in _LIMIT_HEADERS if name not in sent]
        if limited and missing:
            return f"the limited Go server's answer lacks {', '.join(missing)}"
        if not limited and len(missing) != len(_LIMIT_HEADERS):
            return "the Go server without the limiter sent rate-limit headers"
    with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
        if not client.exists(key):
            return f"no bucket at {key} after the limited Go server's answer"
    return None


COUNTED_SECONDS = 2


def _off_name(name: str) -> str:
    """The "limiter off" run on the same Redis (one server, or the cluster) as ``name``, with the
    same requests: the many clients' run is held against the limiter off with the same script."""
    return name.split("limiter")[0] + "limiter off" + (f", {CLIENTS:,} clients" if name.endswith(" clients") else "")


def _count_calls(
    catalog: BenchCatalog, targets: dict[str, tuple[dict[str, str], Path | None, list[str]]], results: Results
) -> None:
    """Python calls per cache hit of each target (``benchmarks/kit/counting.py``): a proxy of the
    same settings under the call counter, one short wrk run counted; each "on" against its "off".
    With it, the limiter's batches in the counted run (its round trips, from the proxy's metrics),
    and the script calls and decisions in them (``INFO commandstats`` of the target's Redis
    nodes: EVALSHA, and the script's HMGET, one per decision)."""
    server_cpu, wrk_cpu = pinning_cpus()
    calls: dict[str, Calls] = {}
    batches: dict[str, tuple[float, int, int]] = {}  # round trips, EVALSHA, decisions
    for name, (env, lua, redis_urls) in targets.items():
        stats = catalog.workdir / (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + ".calls")
        base = start_hot_proxy(env, server_cpu, catalog.children, counted_to=stats)
        proxy = catalog.children[-1]
        # Uncounted first: the proxy's first answers, and the many clients' first leases.
        run_wrk(base + HOT_URL, COUNTED_SECONDS * 2, wrk_cpu, lua)
        if lua is not None and env.get("RATE_LIMIT_ENABLED") == "true":
            # Then past every lease's end, as each round of the many clients begins (a target's
            # rounds are 16 s or more apart): counted right after the run above, every client still
            # held its 10 s lease and the count saw no decision in Redis at all (0 EVALSHA in 2 s,
            # on main and with key groups alike, 2026-12-06, issue 24).
            time.sleep(LEASE_SECONDS + 1)
        trips_before, (_, evalsha_before, decisions_before) = _round_trips(base), redis_work(redis_urls)
        with counting(proxy.pid, stats):
            run = run_wrk(base + HOT_URL, COUNTED_SECONDS, wrk_cpu, lua)
        _, evalsha, decisions = redis_work(redis_urls)
        batches[name] = (_round_trips(base) - trips_before, evalsha - evalsha_before, decisions - decisions_before)
        calls[name] = Calls.read(stats, run.requests)
        stop_process(proxy)
    print("\nPython calls per cache hit (cProfile's count, start-up excluded):")
    for name, counted in calls.items():
        off_name = _off_name(name)
        print(f"  {name}: {counted.total:.1f}" + ("" if name == off_name else f" ({calls[off_name].total:.1f} off)"))
        if name == off_name:
            continue
        trips, evalsha, decisions = batches[name]
        per_batch = (
            f"{decisions} decisions in Redis in {trips:.0f} batches: {decisions / max(trips, 1):.1f} decisions and "
            f"{evalsha / max(trips, 1):.1f} EVALSHA per batch"
        )
        print("    " + per_batch)
        grown = counted.more_than(calls[off_name], top=8)
        print("    more per request than off: " + "; ".join(f"+{n:.2f} {function}" for n, function in grown))
        results.add(
            f"Python calls per cache hit, {name}",
            counted.total,
            "calls",
            baseline=calls[off_name].total,
            baseline_label=f"{off_name}, same run",
            ratio=calls[off_name].total / counted.total,  # as the throughput ratio: off ÷ on
            notes=f"counted, not timed: the machine's noise does not move it; {per_batch}; most added: "
            + ", ".join(f"{function} +{n:.2f}" for n, function in grown[:4])
            + (
                "; counted once the leases an uncounted run gave the clients had expired, as each round begins,"
                " so every client's first request is a decision in Redis"
                if "clients" in name
                else ""
            ),
        )


# Where a limited cache hit's time goes, by the frames a sample passes through (issue 24).
PROFILE_GROUPS = {
    "the limiter (admit, whole)": ["admit (proxy/ratelimit/limiter.py", "leased (proxy/ratelimit/limiter.py"],
    "  identity (X-Forwarded-For, remembered)": ["client (proxy/ratelimit/limiter.py"],
    "  lease check": ["_from_lease (proxy/ratelimit/limiter.py", "leased (proxy/ratelimit/limiter.py"],
    "batching, futures (batch.py)": ["proxy/ratelimit/batch.py"],
    "script call: arguments, replies (script.py)": ["proxy/ratelimit/script.py"],
    "redis-py (encode, send, parse)": ["redis/"],
    "rate-limit headers": ["admission_headers (proxy/middleware/ratelimit.py"],
    "admission metrics": ["count_admission (proxy/metrics.py"],
}


def _round_trips(base: str) -> float:
    """The limiter's round trips to Redis so far (batches of decisions), from the proxy's metrics."""
    return metric(scrape_sync(base), "search_proxy_ratelimit_duration_seconds_count")


def _profile(directory: Path, targets: dict[str, tuple[int, str, Path | None, str | None]], seconds: int) -> None:
    """One more wrk run per target with py-spy sampling its proxy; the samples go to ``directory``
    (one raw file per target: speedscope.app reads them), the summaries to stdout, with what the
    Redis server (on the same two cores) did meanwhile."""
    directory.mkdir(parents=True, exist_ok=True)
    _, wrk_cpu = pinning_cpus()
    printed: list[str] = []
    for name, (pid, base, lua, redis_url) in targets.items():
        path = directory / (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + ".txt")
        redis_urls = [] if redis_url is None else [redis_url]
        before = redis_work(redis_urls)
        with profiling.sampling(pid, path, wrk_cpu):
            run = run_wrk(base + HOT_URL, seconds, wrk_cpu, lua)
        cpu, calls, decisions = (after - was for after, was in zip(redis_work(redis_urls), before, strict=True))
        lines = ["", f"{name}: {run.rps:,.0f} req/s under py-spy"]
        if redis_url is not None:
            per_k = 1000 / max(1, run.requests)
            lines.append(
                f"  Redis, per 1,000 requests: {cpu * 1000 * per_k:.2f} ms CPU, {decisions * per_k:.0f} decisions "
                f"in {calls * per_k:.1f} EVALSHA"
            )
        lines += profiling.summary(path, PROFILE_GROUPS)
        print("\n".join(lines))
        printed += lines
    (directory / "summary.txt").write_text("\n".join(printed).lstrip() + "\n")


FAILOVER_LOAD_S = 12.0
KILL_AFTER_S = 3.0
FAILOVER_CONNECTIONS = 8
HOT_CLIENT = "198.51.100.7"


def _measure_failover(catalog: BenchCatalog, cluster: RedisClusterServers, results: Results) -> None:
    """SIGKILL the primary owning a hot client's slot under load; see the module's docstring."""
    server_cpu, _ = pinning_cpus()
    prefix = f"{catalog.alias}-failover:"  # buckets of their own, apart from the runs before
    env = on_cluster(
        catalog.proxy_env(TRUSTED_PROXIES="127.0.0.1/32"), cluster, REDIS_KEY_PREFIX=prefix, **EXACT_BUCKET
    )
    timeout_s = int(env.get("REDIS_TIMEOUT_MS") or 50) / 1000
    base = start_hot_proxy(env, server_cpu, catalog.children)
    victim = cluster.primary_of(slot_of(bucket_key(prefix, "ip:" + HOT_CLIENT)))
    answers, back_after = asyncio.run(_failover_load(base, victim.process))
    before = [(seconds, status) for at, seconds, status in answers if at < KILL_AFTER_S]
    after = [(seconds, status) for at, seconds, status in answers if at >= KILL_AFTER_S]
    slow_before = sum(seconds > timeout_s for seconds, _ in before)
    slow_after = sum(seconds > timeout_s for seconds, _ in after)
    errors = sum(status >= 500 for _, _, status in answers)
    print(f"\nfailover: limiter back on Redis {back_after:.2f} s after the SIGKILL; 5xx: {errors}")
    over = f"answers over {timeout_s * 1000:.0f} ms"
    print(f"{over}: {slow_after} of {len(after)} after the kill, {slow_before} of {len(before)} before it")
    results.add(
        "Redis Cluster failover: SIGKILL of a primary to the limiter back on Redis",
        back_after,
        "s",
        notes=f"cluster-node-timeout 1 s; {FAILOVER_CONNECTIONS} connections of one hot client",
    )
    results.add(
        "Redis Cluster failover: answers over the Redis timeout",
        slow_after,
        "answers",
        goal="0",
        met=slow_after == 0,
        notes=f"of {len(after)} in the {FAILOVER_LOAD_S - KILL_AFTER_S:.0f} s after the kill; {slow_before} of "
        f"{len(before)} in the {KILL_AFTER_S:.0f} s before it (the machine's own noise)",
    )
    results.add("Redis Cluster failover: 5xx answers", errors, "answers", goal="0", met=errors == 0)


async def _failover_load(base: str, victim: subprocess.Popen[bytes]) -> tuple[list[tuple[float, float, int]], float]:
    """(seconds since start, latency, status) of every answer to :data:`HOT_CLIENT`'s requests, and
    the seconds from the kill until the limiter answered from Redis again (nan if not within the run)."""
    answers: list[tuple[float, float, int]] = []
    started = time.monotonic()
    back_after = math.nan
    async with aiohttp.ClientSession() as session:

        async def client() -> None:
            while (now := time.monotonic() - started) < FAILOVER_LOAD_S:
                sent = time.monotonic()
                async with session.get(base + HOT_URL, headers={"X-Forwarded-For": HOT_CLIENT}) as response:
                    await response.read()
                answers.append((now, time.monotonic() - sent, response.status))

        async def killer() -> None:
            nonlocal back_after
            await asyncio.sleep(KILL_AFTER_S)
            victim.kill()
            killed = time.monotonic()
            fell_back = False
            while time.monotonic() - started < FAILOVER_LOAD_S:
                falling_back = metric(await scrape(session, base), "search_proxy_ratelimit_fallback_active") > 0
                fell_back = fell_back or falling_back
                if fell_back and not falling_back:
                    back_after = time.monotonic() - killed
                    return
                await asyncio.sleep(0.05)

        await asyncio.gather(killer(), *(client() for _ in range(FAILOVER_CONNECTIONS)))
    return answers, back_after


if __name__ == "__main__":
    sys.exit(main())
