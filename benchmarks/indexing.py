"""Benchmark: the indexer's full reindex and live stream, against a baseline in the same run.

    python -m benchmarks.indexing [--products 150000] [--seconds 60] [--rate 1000] [--refresh 1s,500ms]

Starts the embedded servers (``devstack``: 127.0.0.1 only, stopped on exit) unless
``DATABASE_URL`` / ``REDIS_URL`` / ``ELASTICSEARCH_NODE`` name running ones, seeds a fresh
database with the sample catalog, then measures:

- **reindex**: ``indexer.reindex.reindex`` of every active product (Postgres read, documents,
  bulk, alias swap), in documents/s; and a **baseline**: ``elasticsearch.helpers.async_bulk``
  of the same documents, pre-built in memory, into a fresh index with the same settings —
  once before and once after the reindex, because these machines are shared and noisy. The
  ratio reindex / mean(baseline) is the number to watch (goal ≥ 0.8).
- **stream**: ``python -m indexer`` as a child process while single-row price updates commit
  at ``--rate`` per second for ``--seconds``; a sampler searches for every fiftieth
  change until its new price is visible: commit → visible latency p50/p95/p99, and the
  sustained rate (changes / time until the last one was visible); once per refresh interval
  given (the index's ``refresh_interval`` is the floor of that latency on a real engine).

It never touches a database or index it did not create, and prints one table at the end.

Run it on the real OpenSearch node (the dev stack's default). On the light engine
(``DEV_ENGINE=osmem``) an update of an old document costs ~50 ms at ~17k documents, so its
stream numbers are that engine's update rate, not the indexer's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

import asyncpg
from elasticsearch.helpers import async_bulk

from benchmarks.kit.percentile import percentile
from benchmarks.kit.processes import ROOT
from benchmarks.kit.results import Results
from benchmarks.kit.stack import DevStack, ScratchDatabases, StackUrls, scratch_indexer_settings
from catalog.document import PRODUCT_ROWS_SQL, is_searchable, product_document
from catalog.engine import create_engine_client
from catalog.mapping import index_mappings, index_settings
from catalog.seed import seed_catalog
from indexer.checkpoint import advance_checkpoint
from indexer.metrics import IndexerMetrics
from indexer.reindex import LOAD_CHUNK, reindex
from indexer.settings import IndexerSettings
from indexer.sink import Sink

SAMPLE_EVERY = 50  # sampling must not load the dev engine, whose gets are not free
REINDEX_GOAL = 0.8
# commit -> searchable p99 goals per refresh interval (seconds), as the README states them.
STREAM_P99_GOALS_S = {"1s": 1.5, "500ms": 1.0}


async def _fresh_database(dbs: ScratchDatabases, products: int) -> str:
    url = await dbs.create("indexer")
    conn = await asyncpg.connect(url)
    try:
        await seed_catalog(conn, products)
    finally:
        await conn.close()
    return url


async def _baseline(engine: object, url: str, alias: str) -> tuple[int, float]:
    """async_bulk of pre-built documents into a fresh index: (documents, seconds)."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(PRODUCT_ROWS_SQL + " WHERE p.status = 'active'")
    finally:
        await conn.close()
    docs = [product_document(r) for r in rows if is_searchable(r)]
    index = f"{alias}_baseline_{uuid.uuid4().hex[:6]}"
    await engine.indices.create(  # type: ignore[attr-defined]
        index=index, settings=index_settings(loading=True, replicas=0), mappings=index_mappings()
    )
    actions = ({"_index": index, "_id": d["id"], "_source": d} for d in docs)
    started = time.perf_counter()
    # Same chunk size as the reindex: the ratio then measures the pipeline (Postgres read,
    # documents, versions), not a chunk-size choice.
    await async_bulk(engine, actions, chunk_size=LOAD_CHUNK)  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    await engine.indices.delete(index=index)  # type: ignore[attr-defined]
    return len(docs), seconds


async def _stream(
    settings: IndexerSettings, url: str, engine: object, seconds: float, rate: int
) -> tuple[dict[str, float], list[float]]:
    """The stream's figures, and each sampled change's commit -> searchable seconds."""
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "REDIS_URL": settings.redis_url,
        "REDIS_KEY_PREFIX": settings.redis_key_prefix,
        "ELASTICSEARCH_NODE": settings.elasticsearch_node,
        "SEARCH_INDEX": settings.search_index,
        "INDEXER_METRICS_PORT": "0",
        "SEARCH_INDEX_REPLICAS": "0",
        "SEARCH_INDEX_REFRESH_INTERVAL": settings.refresh_interval,
        "LOG_LEVEL": "warning",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "indexer", cwd=ROOT, env=env, stdin=subprocess.DEVNULL
    )
    conn = await asyncpg.connect(url)
    try:
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM products WHERE status = 'active'")]
        # Wait until the child streams: it rings up both its connections (LISTEN and reader).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            backends = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            if backends >= 2:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        rng = random.Random(1)
        pending: dict[str, tuple[float, float]] = {}  # product id -> (price written, commit time)
        latencies: list[float] = []
        done = asyncio.Event()
        last_visible = 0.0

        async def sampler() -> None:
            nonlocal last_visible
            while not (done.is_set() and not pending):
                if pending:
                    batch = list(pending)[:20]  # the oldest: dicts keep insertion order
                    # A search, not a GET: Elasticsearch's real-time GET sees a write before a
                    # refresh makes it searchable, and "searchable" is what users wait for.
                    response = await engine.search(  # type: ignore[attr-defined]
                        index=settings.search_index,
                        query={"terms": {"id": batch}},
                        source_includes=["price"],
                        size=len(batch),
                    )
                    now = time.perf_counter()
                    for doc in response["hits"]["hits"]:
                        want = pending.get(doc["_id"])
                        if want and doc["_source"]["price"] >= want[0] - 1e-6:
                            latencies.append(now - want[1])
                            last_visible = now
                            del pending[doc["_id"]]
                await asyncio.sleep(0.02)  # gentle: the sampler must not load the engine itself

        task = asyncio.ensure_future(sampler())
        started = time.perf_counter()
        count = 0
        price = 100_000.0
        while (now := time.perf_counter()) - started < seconds:
            target = started + count / rate
            if target > now:
                await asyncio.sleep(target - now)
            product = rng.choice(ids)
            price += 0.01
            await conn.execute("UPDATE products SET price = $2 WHERE id = $1", product, round(price, 2))
            count += 1
            if count % SAMPLE_EVERY == 0:
                pending[str(product)] = (round(price, 2), time.perf_counter())
        write_seconds = time.perf_counter() - started
        done.set()
        try:
            await asyncio.wait_for(task, 120)
        except TimeoutError:
            print(f"stream: {len(pending)} sampled changes never became visible", file=sys.stderr)
        latencies.sort()
        return {
            "changes": count,
            "offered_rate": count / write_seconds,
            "sustained_rate": count / max(write_seconds, last_visible - started),
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99),
            "samples": len(latencies),
            "mean": statistics.fmean(latencies) if latencies else float("nan"),
        }, latencies
    finally:
        await conn.close()
        proc.terminate()
        await asyncio.wait_for(proc.wait(), 30)


async def run(args: argparse.Namespace, urls: StackUrls, results: Results) -> None:
    dbs = ScratchDatabases(urls.database_url)
    url = await _fresh_database(dbs, args.products)
    alias = f"bench{uuid.uuid4().hex[:6]}_products"
    engine, _ = await create_engine_client(urls.elasticsearch_node, request_timeout=60)
    settings = scratch_indexer_settings(urls, url, alias, f"bench{uuid.uuid4().hex[:6]}:")
    try:
        base1 = await _baseline(engine, url, alias)
        metrics = IndexerMetrics()
        result = await reindex(settings, engine, Sink(engine, metrics, timeout=60), metrics, asyncio.Event())
        base2 = await _baseline(engine, url, alias)
        conn = await asyncpg.connect(url)
        try:  # as the indexer does after its own start-up reindex: no need to replay the load
            await advance_checkpoint(conn, settings.name, result.checkpoint)
        finally:
            await conn.close()
        streams: dict[str, dict[str, float]] = {}
        freshness: dict[str, list[float]] = {}
        for refresh in args.refresh if args.seconds > 0 else []:
            # The refresh interval bounds commit -> searchable from below: measure each one asked.
            # The indexer applies its setting to the live index when it starts.
            streams[refresh], freshness[refresh] = await _stream(
                replace(settings, refresh_interval=refresh), url, engine, args.seconds, args.rate
            )
    finally:
        await engine.indices.delete(index=f"{alias}*", ignore_unavailable=True, allow_no_indices=True)
        await engine.close()
        await dbs.drop_all()

    base_rate = statistics.fmean([base1[0] / base1[1], base2[0] / base2[1]])
    ours = result.documents / result.seconds
    print()
    print(f"{'measure':<44} {'value':>12}")
    print("-" * 57)
    print(f"{'products in catalog':<44} {args.products:>12}")
    print(f"{'active documents':<44} {result.documents:>12}")
    print(f"{'baseline async_bulk before (docs/s)':<44} {base1[0] / base1[1]:>12.0f}")
    print(f"{'baseline async_bulk after (docs/s)':<44} {base2[0] / base2[1]:>12.0f}")
    print(f"{'reindex incl. Postgres read + swap (docs/s)':<44} {ours:>12.0f}")
    print(f"{'reindex / baseline (goal >= 0.8)':<44} {ours / base_rate:>12.2f}")
    for refresh, stream in streams.items():
        name = f"stream, refresh {refresh}"
        print(f"{name + ': changes committed':<44} {stream['changes']:>12.0f}")
        print(f"{name + ': offered (changes/s)':<44} {stream['offered_rate']:>12.0f}")
        print(f"{name + ': sustained (changes/s)':<44} {stream['sustained_rate']:>12.0f}")
        print(f"{name + ': latency samples':<44} {stream['samples']:>12.0f}")
        for key in ("p50", "p95", "p99"):
            print(f"{f'{name}: commit -> searchable {key} (s)':<44} {stream[key]:>12.3f}")
    _record(results, args, result.documents, ours, base_rate, streams, freshness)


def _record(
    results: Results,
    args: argparse.Namespace,
    documents: int,
    ours: float,
    base_rate: float,
    streams: dict[str, dict[str, float]],
    freshness: dict[str, list[float]],
) -> None:
    results.add(
        f"full reindex, {documents:,} active documents of {args.products:,} products",
        ours,
        "docs/s",
        baseline=base_rate,
        baseline_label="raw async_bulk of the same pre-built documents, mean of before and after",
        goal=f"≥ {REINDEX_GOAL} × the raw bulk",
        met=ours / base_rate >= REINDEX_GOAL,
    )
    for refresh, stream in streams.items():
        p99 = stream["p99"]
        goal = STREAM_P99_GOALS_S.get(refresh)
        results.add(
            f"stream commit -> searchable p99, refresh {refresh}, {args.rate:,} changes/s",
            p99,
            "s",
            goal=f"p99 < {goal:g} s" if goal else "",
            met=p99 < goal if goal else None,
            notes=f"p50 {stream['p50']:.2f} s, p95 {stream['p95']:.2f} s; "
            f"{stream['samples']:,.0f} sampled changes over {args.seconds:g} s (1 in {SAMPLE_EVERY})",
        )
        results.add(
            f"stream sustained changes/s, refresh {refresh}",
            stream["sustained_rate"],
            "changes/s",
            baseline=stream["offered_rate"],
            baseline_label="offered",
            notes="changes / time until the last sampled one was searchable",
        )
    if streams:
        results.cdf(
            "stream-freshness.png",
            f"Commit -> searchable through the streaming indexer, {args.rate:,} changes/s, by refresh interval",
            "seconds",
            {f"refresh {r}": values for r, values in freshness.items()},
        )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.indexing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=150_000)
    parser.add_argument("--seconds", type=float, default=60.0, help="live-stream duration (0 skips it)")
    parser.add_argument("--rate", type=int, default=1_000, help="live-stream changes per second")
    parser.add_argument(
        "--refresh",
        type=lambda text: [part.strip() for part in text.split(",") if part.strip()],
        default=["1s", "500ms"],
        help="the index refresh intervals to stream under, comma-separated (default 1s,500ms)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here (benchmarks/report.py reads them)")
    args = parser.parse_args()
    results = Results("indexer")
    try:
        with DevStack(os.environ) as urls:
            asyncio.run(run(args, urls, results))
    finally:
        if args.json:
            results.write(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
