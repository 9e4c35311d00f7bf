"""Benchmark: the service on a three-node engine cluster against one node, in the same run.

    python -m benchmarks.engine_cluster [--products 20000] [--searches 600] [--heap 512m]
                                        [--changes-per-s 500] [--searches-per-s 50]
                                        [--json PATH] [--markdown PATH]

Starts the dev stack (Postgres, Redis, one OpenSearch node) and, beside it, a cluster of three
OpenSearch processes on loopback (``devstack.opensearch.start_opensearch_cluster``), seeds a
scratch database with ``--products`` sample products, and measures:

- **document size**: the one-node index's primary store bytes / documents (``_cat/indices``),
  the number ``docs/sizing.md`` scales from;
- **reindex**: ``hos-search reindex``'s code (``indexer.service.run_reindex``) on one node with
  one shard, and on the cluster with three shards and one replica, in documents/s; and the raw
  baseline on the same cluster: ``elasticsearch.helpers.async_bulk`` of the same documents,
  pre-built in memory, into an index with the same layout (goal: reindex ≥ 0.8× raw);
- **search latency**: the proxy's own query bodies (``proxy.query.build_search``) sent
  alternately to a one-shard and a three-shard index of the same documents on the cluster:
  p50/p95/p99 and the ratio 3 shards / 1 shard;
- **node loss** (issue 21's scenario): the streaming indexer (``python -m indexer``, a process
  of its own) keeps the three-shard index up to date while a writer changes ``--changes-per-s``
  products a second (default 500) and a proxy process serves ``--searches-per-s`` searches
  (default 50, an open model: a slow answer does not slow the arrivals). After a warm-up the
  node holding the most primaries is SIGKILLed. Reported: 5xx seen, answers from the fallback,
  time from the kill to the last failed or fallback answer; the indexer's lag
  (``search_indexer_lag_seconds``, sampled every 100 ms) before the kill, its peak after, and
  the time until it is back under 5 s (goal: within 60 s); the indexer's CPU seconds per 1,000
  changes over the phase (``/proc``: the figure that does not depend on how busy the machine
  is); then the time until the restarted node has rejoined and the cluster is green again.

Machines here are shared: every figure is a ratio within this run, and the load average is
recorded with the results. Never touches a database or index it did not create.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from elasticsearch import AsyncElasticsearch
from elasticsearch.helpers import async_bulk

from benchmarks.kit.percentile import percentile
from benchmarks.kit.processes import spawn, wait_answering
from benchmarks.kit.results import Results
from benchmarks.kit.scrape import metric, scrape
from benchmarks.kit.stack import (
    DevStack,
    ScratchDatabases,
    ServerProcess,
    StackUrls,
    free_port,
    parse_heap,
    restart_opensearch,
    start_opensearch_cluster,
)
from benchmarks.kit.streams import LAG_GOAL_S, at_rate, lag_recovery, write_changes
from catalog.document import PRODUCT_ROWS_SQL, is_searchable, product_document
from catalog.engine import create_engine_client
from catalog.mapping import index_mappings, index_settings, live_settings
from catalog.processes import stop_process
from catalog.seed import seed_catalog
from indexer.service import run_reindex
from indexer.settings import IndexerSettings
from proxy.params import SearchRequest
from proxy.query import build_search

WORDS = ("wand", "cloak", "potter", "costume", "replica", "mug", "poster", "sword", "ring", "map", "official")
SORTS = ("relevance", "relevance", "relevance", "newest", "price_asc")


async def _store_bytes_per_doc(engine: AsyncElasticsearch, index: str) -> tuple[int, int]:
    await engine.indices.refresh(index=index)
    rows: list[dict[str, str]] = (await engine.cat.indices(index=index, bytes="b", format="json")).body  # type: ignore[assignment]
    return int(rows[0]["pri.store.size"]), int(rows[0]["docs.count"])


def _indexer(urls: StackUrls, node: str, database_url: str, alias: str, shards: int, replicas: int) -> IndexerSettings:
    return IndexerSettings(
        database_url=database_url,
        redis_url=urls.redis_url,
        redis_key_prefix=f"{alias}:",
        elasticsearch_node=node,
        search_index=alias,
        metrics_port=0,
        index_shards=shards,
        index_replicas=replicas,
        bulk_timeout_s=60.0,
    )


async def _raw_bulk(engine: AsyncElasticsearch, database_url: str, shards: int, replicas: int) -> tuple[float, int]:
    """The baseline: pre-built documents straight into a fresh index of the same layout."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(PRODUCT_ROWS_SQL + " ORDER BY p.id")
    finally:
        await conn.close()
    index = f"rawbulk{uuid.uuid4().hex[:8]}"
    actions = [
        {"_index": index, "_id": str(row["id"]), "_source": product_document(row)} for row in rows if is_searchable(row)
    ]
    started = time.perf_counter()
    await engine.indices.create(
        index=index, settings=index_settings(loading=True, shards=shards, replicas=replicas), mappings=index_mappings()
    )
    await async_bulk(engine, actions, chunk_size=500, max_retries=5)
    await engine.indices.put_settings(index=index, settings=live_settings(replicas=replicas))
    await engine.indices.refresh(index=index)
    seconds = time.perf_counter() - started
    await engine.indices.delete(index=index)
    return seconds, len(actions)


async def _search_latencies(
    engine: AsyncElasticsearch, indexes: dict[str, tuple[str, str | None]], searches: int
) -> dict[str, list[float]]:
    """The same bodies, alternately to each (index, search type), so all see the same moments of a
    busy machine."""
    rng = random.Random(11)
    seconds: dict[str, list[float]] = {label: [] for label in indexes}
    for _ in range(searches):
        req = SearchRequest(q=rng.choice(WORDS), sort=rng.choice(SORTS), page=rng.randint(1, 3))  # type: ignore[arg-type]
        body = build_search(req)
        for label, (index, search_type) in indexes.items():
            started = time.perf_counter()
            await engine.search(index=index, body=body, allow_partial_search_results=False, search_type=search_type)
            seconds[label].append(time.perf_counter() - started)
    return seconds


def _service_env(urls: StackUrls, node: str, database_url: str, alias: str, **extra: str) -> dict[str, str]:
    """A proxy's or indexer's environment on ``node`` (one URL or several), ``database_url`` and ``alias``."""
    return {
        **os.environ,
        **urls.as_env(),
        "ELASTICSEARCH_NODE": node,
        "DATABASE_URL": database_url,
        "SEARCH_INDEX": alias,
        "REDIS_KEY_PREFIX": f"{alias}:",
        **extra,
    }


def _spawn_proxy(
    urls: StackUrls, node: str, database_url: str, alias: str, port: int, log: Path
) -> subprocess.Popen[bytes]:
    extra = {"CACHE_ENABLED": "false", "RATE_LIMIT_ENABLED": "false", "LOG_LEVEL": "warning", **NODE_LOSS_PROXY_ENV}
    env = _service_env(urls, node, database_url, alias, **extra)
    with open(log, "ab") as out:  # the child keeps its own copy of the file
        # The kit's spawn: in the repository root, dying with the bench (an orphaned proxy
        # outlived a killed run before).
        return spawn([sys.executable, "-m", "proxy", "--port", str(port), "--workers", "1"], env, output=out)


# The indexer and proxy as tests/test_engine_cluster.py's node-loss test runs them, so the bench
# and the test measure the same thing: a 5 s bulk timeout (a bulk stuck on a dead primary is
# retried on another node), and a fallback sized for the searches it may take over alone.
NODE_LOSS_INDEXER_ENV = {"INDEXER_BULK_TIMEOUT_S": "5", "INDEXER_PRUNE_INTERVAL_S": "3600"}
NODE_LOSS_PROXY_ENV = {"ENGINE_TIMEOUT_MS": "2000", "FALLBACK_MAX_CONCURRENCY": "16", "FALLBACK_QUEUE_MS": "500"}
RECOVERY_BUDGET_S = 60.0


def _spawn_indexer(
    urls: StackUrls, node: str, database_url: str, alias: str, metrics_port: int, log: Path
) -> subprocess.Popen[bytes]:
    extra = {"SEARCH_INDEX_SHARDS": "3", "SEARCH_INDEX_REPLICAS": "1", "INDEXER_METRICS_PORT": str(metrics_port)}
    env = _service_env(urls, node, database_url, alias, LOG_LEVEL="info", **extra, **NODE_LOSS_INDEXER_ENV)
    with open(log, "ab") as out:
        return spawn([sys.executable, "-m", "indexer"], env, output=out)


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``), else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _search_open(
    session: aiohttp.ClientSession,
    proxy_url: str,
    per_s: int,
    stop: asyncio.Event,
    answers: list[tuple[float, int, str]],
) -> None:
    """``per_s`` searches a second on a fixed schedule, each recorded as (start, status, backend)."""
    rng = random.Random(5)

    async def one() -> None:
        started = time.monotonic()
        try:
            query = f"q={rng.choice(WORDS)}&page={rng.randint(1, 3)}"
            async with session.get(f"{proxy_url}/api/search?{query}") as response:
                await response.read()
                answers.append((started, response.status, response.headers.get("X-Search-Backend", "")))
        except (aiohttp.ClientError, TimeoutError):
            answers.append((started, 599, ""))

    await at_rate(per_s, stop, one)


async def _sample_indexer(
    session: aiohttp.ClientSession, metrics_url: str, stop: asyncio.Event, samples: list[tuple[float, float, float]]
) -> None:
    """(time, lag seconds, changes seen) from the indexer's metrics every 100 ms."""
    while not stop.is_set():
        try:
            found = await scrape(session, metrics_url)
            samples.append(
                (
                    time.monotonic(),
                    metric(found, "search_indexer_lag_seconds"),
                    metric(found, "search_indexer_changes_seen_total"),
                )
            )
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)


async def _node_loss(
    engine: AsyncElasticsearch,
    cluster: list[ServerProcess],
    urls: StackUrls,
    database_url: str,
    alias: str,
    proxy_url: str,
    args: argparse.Namespace,
    workdir: Path,
) -> dict[str, Any]:
    conn = await asyncpg.connect(database_url)
    try:
        ids = [int(row["id"]) for row in await conn.fetch("SELECT id FROM products")]
    finally:
        await conn.close()
    metrics_port = free_port()
    three_nodes = ",".join(node.url for node in cluster)
    indexer = _spawn_indexer(urls, three_nodes, database_url, alias, metrics_port, workdir / "indexer.log")
    metrics_url = f"http://127.0.0.1:{metrics_port}"
    answers: list[tuple[float, int, str]] = []
    written: list[int] = []
    samples: list[tuple[float, float, float]] = []
    stop = asyncio.Event()
    victim: ServerProcess | None = None
    try:
        wait_answering(metrics_url + "/metrics", indexer)
        shards = (await engine.cat.shards(index=alias, format="json")).body
        primaries = [shard["node"] for shard in shards if shard["prirep"] == "p"]  # type: ignore[index]
        name = max(set(primaries), key=primaries.count)
        victim = cluster[int(name.rsplit("-", 1)[1]) - 1]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            tasks = [
                asyncio.ensure_future(write_changes(database_url, ids, args.changes_per_s, stop, written)),
                asyncio.ensure_future(_search_open(session, proxy_url, args.searches_per_s, stop, answers)),
                asyncio.ensure_future(_sample_indexer(session, metrics_url, stop, samples)),
            ]
            try:
                await asyncio.sleep(args.warmup)
                cpu_start, seen_start = _cpu_seconds(indexer.pid), samples[-1][2] if samples else 0.0
                victim.process.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                # Until the lag has been under 5 s for 5 s (and 30 s have passed, so the answers
                # while the cluster settles are all seen), at most the 60 s.
                while time.monotonic() - killed < RECOVERY_BUDGET_S:
                    await asyncio.sleep(0.5)
                    recent = [lag for at, lag, _ in samples if at > time.monotonic() - 5]
                    if time.monotonic() - killed > 30 and recent and max(recent) < LAG_GOAL_S:
                        break
                cpu_end, seen_end = _cpu_seconds(indexer.pid), samples[-1][2] if samples else 0.0
                streamed_s = time.monotonic() - killed
            finally:
                stop.set()
                await asyncio.gather(*tasks)
        after = [(at - killed, status, backend) for at, status, backend in answers if at >= killed]
        bad = [at for at, status, backend in after if status >= 500 or backend != "elasticsearch"]
        recovery = lag_recovery([(at, lag) for at, lag, _ in samples], killed)
        changes = seen_end - seen_start
        cpu = None if cpu_start is None or cpu_end is None or changes <= 0 else (cpu_end - cpu_start) / changes * 1000
        restart_started = time.monotonic()
        restart_opensearch(victim)
        await engine.options(request_timeout=300).cluster.health(index=alias, wait_for_status="green", timeout="280s")
        return {
            "changes_per_s_asked": args.changes_per_s,
            "changes_per_s_written": round(sum(written) / (args.warmup + streamed_s)),
            "searches_per_s_asked": args.searches_per_s,
            "answers": len(answers),
            "answers_after_kill": len(after),
            "errors_5xx": sum(1 for _, status, _ in answers if status >= 500),
            "fallback_answers": sum(1 for _, _, backend in answers if backend == "postgres"),
            "last_failed_or_fallback_s": round(max(bad), 2) if bad else 0.0,
            **recovery,
            "indexer_changes_read_after_kill": round(changes),
            "indexer_cpu_s_per_1000_changes": None if cpu is None else round(cpu, 3),
            "restart_to_green_s": round(time.monotonic() - restart_started, 1),
            "killed_primaries": primaries.count(name),
        }
    finally:
        stop.set()
        stop_process(indexer, 30)
        if victim is not None and not victim.running():
            restart_opensearch(victim)


async def run(urls: StackUrls, cluster: list[ServerProcess], args: argparse.Namespace) -> dict[str, Any]:
    one_node = urls.elasticsearch_node
    three_nodes = ",".join(node.url for node in cluster)
    dbs = ScratchDatabases(urls.database_url, prefix="benchcluster")
    one, _ = await create_engine_client(one_node, request_timeout=120)
    three, _ = await create_engine_client(three_nodes, request_timeout=120)
    aliases: list[tuple[AsyncElasticsearch, str]] = []
    results: dict[str, Any] = {}
    proxy: subprocess.Popen[bytes] | None = None
    try:
        database_url = await dbs.create("cluster")
        conn = await asyncpg.connect(database_url)
        try:
            await seed_catalog(conn, args.products)
        finally:
            await conn.close()
        print(f"seeded {args.products:,} products", flush=True)

        alias_one = f"benchone{uuid.uuid4().hex[:8]}_products"
        aliases.append((one, alias_one))
        reindex_one = await run_reindex(_indexer(urls, one_node, database_url, alias_one, 1, 0), asyncio.Event())
        size, docs = await _store_bytes_per_doc(one, reindex_one.index)
        results["document"] = {"docs": docs, "primary_store_bytes": size, "bytes_per_doc": round(size / docs, 1)}
        print(f"1 node, 1 shard: reindex {reindex_one.documents / reindex_one.seconds:,.0f} docs/s", flush=True)

        raw_before = await _raw_bulk(three, database_url, 3, 1)
        alias_three = f"benchthree{uuid.uuid4().hex[:8]}_products"
        aliases.append((three, alias_three))
        reindex_three = await run_reindex(_indexer(urls, three_nodes, database_url, alias_three, 3, 1), asyncio.Event())
        raw_after = await _raw_bulk(three, database_url, 3, 1)
        raw_rate = statistics.mean([raw_before[1] / raw_before[0], raw_after[1] / raw_after[0]])
        rate_one = reindex_one.documents / reindex_one.seconds
        rate_three = reindex_three.documents / reindex_three.seconds
        results["reindex"] = {
            "one_node_one_shard_docs_per_s": round(rate_one),
            "three_nodes_three_shards_docs_per_s": round(rate_three),
            "raw_async_bulk_on_cluster_docs_per_s": round(raw_rate),
            "three_vs_one": round(rate_three / rate_one, 3),
            "three_vs_raw": round(rate_three / raw_rate, 3),
        }
        print(f"reindex: {results['reindex']}", flush=True)

        alias_single_shard = f"benchsingle{uuid.uuid4().hex[:8]}_products"
        aliases.append((three, alias_single_shard))
        await run_reindex(_indexer(urls, three_nodes, database_url, alias_single_shard, 1, 1), asyncio.Event())
        for alias in (alias_three, alias_single_shard):
            await three.options(request_timeout=300).cluster.health(
                index=alias, wait_for_status="green", timeout="280s"
            )
        targets: dict[str, tuple[str, str | None]] = {
            "1 shard": (alias_single_shard, None),
            "3 shards": (alias_three, None),
            # Global term statistics first (one more round trip per shard): see docs/relevance-shards.md.
            "3 shards dfs": (alias_three, "dfs_query_then_fetch"),
        }
        await _search_latencies(three, targets, 50)  # warm-up
        latencies = await _search_latencies(three, targets, args.searches)
        results["search"] = {
            label: {f"p{int(p * 100)}_ms": round(percentile(values, p * 100) * 1000, 2) for p in (0.5, 0.95, 0.99)}
            for label, values in latencies.items()
        }
        results["search"]["p99_ratio_3_vs_1"] = round(
            percentile(latencies["3 shards"], 99) / percentile(latencies["1 shard"], 99), 3
        )
        results["search"]["p99_ratio_dfs_vs_3"] = round(
            percentile(latencies["3 shards dfs"], 99) / percentile(latencies["3 shards"], 99), 3
        )
        print(f"search: {results['search']}", flush=True)

        port = free_port()
        log = Path(tempfile.mkdtemp(prefix="hos-bench-cluster-")) / "proxy.log"
        proxy = _spawn_proxy(urls, three_nodes, database_url, alias_three, port, log)
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        results["node_loss"] = await _node_loss(
            three, cluster, urls, database_url, alias_three, f"http://127.0.0.1:{port}", args, log.parent
        )
        print(f"node loss: {results['node_loss']}", flush=True)
    finally:
        if proxy is not None:
            stop_process(proxy, 30)
        for engine, alias in aliases:
            await engine.indices.delete(index=f"{alias}*", ignore_unavailable=True, allow_no_indices=True)
        await one.close()
        await three.close()
        await dbs.drop_all()
    return results


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = [
        f"# Engine cluster benchmark — {meta['date']}",
        "",
        f"`python -m benchmarks.engine_cluster --products {meta['products']}` on {meta['machine']}; "
        f"load average before/after: {meta['load_before']} / {meta['load_after']} "
        "(a shared, busy machine: read the ratios, not the absolute numbers).",
        "",
    ]
    if "document" in results:
        d = results["document"]
        lines += [
            f"Document size: {d['bytes_per_doc']} bytes per document "
            f"({d['primary_store_bytes']:,} B / {d['docs']:,} docs, primary store, one node).",
            "",
        ]
    if "reindex" in results:
        r = results["reindex"]
        lines += [
            "| reindex | docs/s |",
            "|---|---|",
            f"| 1 node, 1 shard | {r['one_node_one_shard_docs_per_s']:,} |",
            f"| 3 nodes, 3 shards, 1 replica | {r['three_nodes_three_shards_docs_per_s']:,} |",
            f"| raw async_bulk, same cluster and layout | {r['raw_async_bulk_on_cluster_docs_per_s']:,} |",
            f"| ratio 3 nodes / 1 node | {r['three_vs_one']} |",
            f"| ratio reindex / raw (goal ≥ 0.8) | {r['three_vs_raw']} |",
            "",
        ]
    if "search" in results:
        s = results["search"]
        lines += ["| search (cluster) | p50 ms | p95 ms | p99 ms |", "|---|---|---|---|"]
        for label in ("1 shard", "3 shards", "3 shards dfs"):
            if label in s:
                lines.append(f"| {label} | {s[label]['p50_ms']} | {s[label]['p95_ms']} | {s[label]['p99_ms']} |")
        lines += ["", f"p99 ratio 3 shards / 1 shard: {s['p99_ratio_3_vs_1']}", ""]
        if "p99_ratio_dfs_vs_3" in s:
            lines += [f"p99 ratio dfs_query_then_fetch / query_then_fetch on 3 shards: {s['p99_ratio_dfs_vs_3']}", ""]
    if "node_loss" in results:
        n = results["node_loss"]
        lines += ["| node loss | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in n.items()] + [""]
    return "\n".join(lines) + "\n"


def figures(raw: dict[str, Any]) -> Results:
    """The run as ``make bench``'s report reads a bench (``benchmarks.kit.results``), the raw
    figures kept in its meta."""
    out = Results("engine-cluster")
    search, reindex, loss = raw["search"], raw["reindex"], raw["node_loss"]
    out.add(
        "search p99, 3 shards on 3 nodes",
        search["3 shards"]["p99_ms"],
        "ms",
        baseline=search["1 shard"]["p99_ms"],
        baseline_label="1 shard on 1 node",
        notes="on 2 cores every shard's work shares the same CPUs: more shards cost, they cannot run in parallel",
    )
    out.add(
        "reindex throughput, 3 nodes / 3 shards",
        reindex["three_nodes_three_shards_docs_per_s"],
        "docs/s",
        baseline=reindex["raw_async_bulk_on_cluster_docs_per_s"],
        baseline_label="raw async_bulk, same cluster",
        goal=">= 0.8 x",
        met=reindex["three_vs_raw"] >= 0.8,
    )
    out.add(
        "node loss: 5xx answers after the SIGKILL", loss["errors_5xx"], "answers", goal="0", met=loss["errors_5xx"] == 0
    )
    out.add("node loss: answers from the fallback", loss["fallback_answers"], "answers")
    out.add("node loss: SIGKILL to the last failed or fallback answer", loss["last_failed_or_fallback_s"], "s")
    out.add(
        "node loss: indexer lag peak after the SIGKILL",
        loss["lag_peak_s"],
        "s",
        notes=f"{loss['changes_per_s_written']} changes/s written, {loss['searches_per_s_asked']} searches/s asked; "
        f"lag before the kill at most {loss['lag_before_kill_max_s']} s",
    )
    back = loss["lag_back_under_5s_after_s"]
    out.add(
        "node loss: SIGKILL to the indexer's lag back under 5 s",
        back,
        "s",
        goal="<= 60 s",
        met=back is not None and back <= RECOVERY_BUDGET_S,
        notes="None: not back under 5 s while measured",
    )
    out.add(
        "node loss: indexer CPU per 1,000 changes (after the SIGKILL)",
        loss["indexer_cpu_s_per_1000_changes"],
        "CPU s",
    )
    out.add("node loss: restart to green", loss["restart_to_green_s"], "s")
    out.meta = {**raw["meta"], "raw": {k: v for k, v in raw.items() if k != "meta"}}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engine_cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=20_000)
    parser.add_argument("--searches", type=int, default=600)
    parser.add_argument("--heap", default="512m", help="JVM heap of each cluster node")
    parser.add_argument("--changes-per-s", type=int, default=500, help="product changes a second during node loss")
    parser.add_argument("--searches-per-s", type=int, default=50, help="searches a second during node loss")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds of streaming before the SIGKILL")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "products": args.products,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_before": " ".join(f"{v:.1f}" for v in os.getloadavg()),
    }
    stack = DevStack({**os.environ, "DEV_ENGINE_NODES": "1"})
    cluster: list[ServerProcess] = []
    workdir = Path(tempfile.mkdtemp(prefix="hos-bench-cluster-nodes-"))
    try:
        urls = stack.start()
        cluster = start_opensearch_cluster(workdir, nodes=3, heap=parse_heap(args.heap))
        print(f"one node {urls.elasticsearch_node}; cluster {[node.url for node in cluster]}", flush=True)
        results = asyncio.run(run(urls, cluster, args))
    finally:
        for node in cluster:
            node.stop()
        stack.close()
    meta["load_after"] = " ".join(f"{v:.1f}" for v in os.getloadavg())
    results["meta"] = meta
    if args.json:
        figures(results).write(args.json)
    text = markdown(results)
    if args.markdown:
        args.markdown.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
