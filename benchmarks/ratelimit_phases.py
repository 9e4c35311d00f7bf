"""Benchmark: the limiter's cost with many clients, split into a round's cold start and its warm rest.

    python -m benchmarks.ratelimit_phases [--clients 1,1000,10000,30000] [--rounds 3] [--seconds 4]

``benchmarks/ratelimit.py`` holds the limiter with 10,000 clients against the limiter off over
8 s rounds, and its one ratio mixes two costs (issue 24): the **cold start**, while every client's
first request is a decision in Redis (batched, ``proxy/ratelimit/batch.py``) that brings it a
lease, and the **warm rest**, when every request is spent from a lease (``Limiter.leased``: the
identity, the lease, the headers; no Redis). Here they are apart. For each number of clients,
each round: the limiter-off proxy serves the clients' stream (``--seconds``, the baseline); once
every lease has expired (``LEASE_SECONDS`` after the last run on), the limiter-on proxy serves it
twice in a row — the first run starts cold, the second finds every client leased. Each is held
against the off run of its round (req/s on ÷ off, the median over the rounds), with the proxy's
CPU per answer. Same proxies, pinning and Redis as ``benchmarks.ratelimit`` (Redis on wrk's core,
a bucket too large to run dry). One client is the warm path's floor: the same code for every
request with nothing to look up among many. 30,000 clients were more than a worker remembered
(``IDENTITIES_MAX_BYTES`` held about 11,000 identities until 2026-12-06, 44,000 since): every
request paid for its identity again. Needs ``wrk``. Everything listens on 127.0.0.1 and is stopped on exit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.kit.catalog import BenchCatalog, bench_catalog
from benchmarks.kit.processes import BIG_BUCKET, HOT_URL, pin_redis, pinning_cpus, start_hot_proxy
from benchmarks.kit.results import Results
from benchmarks.kit.wrk import WrkRun, many_clients_lua, run_wrk_costed
from proxy.ratelimit.limiter import LEASE_SECONDS

PHASES = ("cold start", "warm")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ratelimit_phases",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--clients", default="1,1000,10000,30000", help="comma-separated numbers of clients")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4, help="each run's length (the cold run's share depends on it)")
    parser.add_argument("--products", type=int, default=2_000)
    parser.add_argument("--json", type=Path, help="also write the figures here (benchmarks/report.py reads them)")
    args = parser.parse_args(argv)
    try:
        sizes = [int(n) for n in args.clients.split(",")]
    except ValueError:
        parser.error("--clients: comma-separated whole numbers, e.g. 1,10000")
    if not sizes or min(sizes) < 1 or args.rounds < 1 or args.seconds < 1:
        parser.error("--clients, --rounds and --seconds must be at least 1")
    if shutil.which("wrk") is None:
        print("benchmarks.ratelimit_phases: wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    results = Results("ratelimit-phases")
    results.meta["load average at the start"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    try:
        with bench_catalog("ratelimit-phases", args.products) as catalog:
            _measure(catalog, sizes, args, results)
    finally:
        results.meta["load average at the end"] = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        if args.json is not None:
            results.write(args.json)
    return 0


def _measure(catalog: BenchCatalog, sizes: list[int], args: argparse.Namespace, results: Results) -> None:
    server_cpu, wrk_cpu = pinning_cpus()
    pinned_redis = pin_redis([catalog.urls.redis_url], wrk_cpu)
    common = catalog.proxy_env(TRUSTED_PROXIES="127.0.0.1/32")
    off = start_hot_proxy({**common, "RATE_LIMIT_ENABLED": "false"}, server_cpu, catalog.children)
    on = start_hot_proxy({**common, **BIG_BUCKET}, server_cpu, catalog.children)
    pids = {off: catalog.children[-2].pid, on: catalog.children[-1].pid}

    def measured(base: str, script: Path) -> tuple[WrkRun, float]:
        return run_wrk_costed(base + HOT_URL, args.seconds, wrk_cpu, pids[base], script)

    print(f"\n{'clients':>8} {'run':<12} {'req/s':>9} {'÷ off':>6} {'CPU us/req':>10}")
    # Once for every size: the clients of a size are among the next one's (10.0.0.0 up), and were
    # still leased when its first cold start began (2026-12-06's sixth pass: 1,000 of the
    # 10,000 and 10,000 of the 30,000).
    last_on = time.monotonic() - LEASE_SECONDS
    for clients in sizes:
        script = catalog.workdir / f"clients-{clients}.lua"
        script.write_text(many_clients_lua(clients))
        ratios: dict[str, list[float]] = {phase: [] for phase in PHASES}
        cpu: dict[str, list[float]] = {phase: [] for phase in ("off", *PHASES)}
        for _ in range(args.rounds):
            baseline, cpu_off = measured(off, script)
            cpu["off"].append(cpu_off)
            print(f"{clients:>8,} {'off':<12} {baseline.rps:>9,.0f} {'':>6} {cpu_off:>10.1f}")
            # Every lease the last runs on gave has expired: this run starts cold.
            time.sleep(max(0.0, last_on + LEASE_SECONDS + 1 - time.monotonic()))
            for phase in PHASES:
                run, cpu_on = measured(on, script)
                ratios[phase].append(run.rps / baseline.rps)
                cpu[phase].append(cpu_on)
                print(f"{clients:>8,} {phase:<12} {run.rps:>9,.0f} {run.rps / baseline.rps:>6.2f} {cpu_on:>10.1f}")
            last_on = time.monotonic()
        for phase in PHASES:
            ratio = statistics.median(ratios[phase])
            results.add(
                f"limiter on ÷ off, {clients:,} client{'s' if clients != 1 else ''}, {phase}",
                ratio,
                "× off",
                ratio=ratio,
                baseline_label=f"limiter off, the same {clients:,} clients' stream, same round",
                notes=f"median of {args.rounds} rounds of {args.seconds} s; proxy CPU per answer "
                f"{statistics.median(cpu[phase]):.1f} µs against {statistics.median(cpu['off']):.1f} off"
                + ("; the run right after every lease expired" if phase == "cold start" else "; every client leased"),
            )
    pinning = f"proxy on CPU {server_cpu}, wrk on CPU {wrk_cpu}" if server_cpu is not None else "not pinned"
    results.meta["load"] = f"1-worker proxies, wrk -t1 -c50 on {HOT_URL}; {pinning}" + (
        f"; Redis on CPU {wrk_cpu} with wrk" if pinned_redis else "; Redis unpinned"
    )


if __name__ == "__main__":
    sys.exit(main())
