"""Search on a real three-node engine cluster: three OpenSearch processes on loopback.

The cluster is this module's own (the session's one-node engine stays as it is); Postgres and
Redis are the session's. It proves that answers on three shards equal one node's, that a rebuild
swaps its alias on the cluster, that ``/readyz`` follows the cluster's health, and that losing
the node with the most primaries — SIGKILLed under a stream of changes and a stream of searches
— loses no change, answers no 5xx, and heals: the lag falls back under 5 s, and the restarted
node rejoins and the cluster turns green. The node-loss test runs last: it kills a node.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from elasticsearch import AsyncElasticsearch

from benchmarks.kit.streams import at_rate, write_changes
from catalog.config import EngineAccess
from catalog.engine import PlainJsonNode, create_engine_client
from catalog.mapping import index_mappings, index_settings
from catalog.seed import seed_catalog
from devstack.opensearch import find_java_tools, parse_heap, restart_opensearch, start_opensearch_cluster
from devstack.servers import ServerProcess, free_port
from devstack.stack import StackUrls
from indexer.service import run_reindex
from proxy.app import create_app
from tests.conftest import SearchCatalog, load_index, proxy_settings
from tests.indexer_support import (
    active_products,
    eventually,
    indexed_catalog,
    indexer_settings,
    settings_env,
    spawn_indexer,
)

NODES = 3
SHARDS = 3

pytestmark = pytest.mark.skipif(find_java_tools() is None, reason="a cluster of real engine nodes needs java and mvn")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, search_catalog: SearchCatalog) -> Iterator[list[ServerProcess]]:
    """Three engine processes forming one cluster; each node's heap is DEV_ENGINE_HEAP or 512m.

    After the session's search catalog: three JVMs starting on two cores starve its bulk load
    on the one-node engine past the client's timeout (seen here).
    """
    heap = parse_heap(os.environ.get("DEV_ENGINE_HEAP") or "512m")
    nodes = start_opensearch_cluster(tmp_path_factory.mktemp("cluster"), nodes=NODES, heap=heap)
    try:
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture(scope="module")
def cluster_urls(stack_urls: StackUrls, cluster: list[ServerProcess]) -> StackUrls:
    return StackUrls(stack_urls.database_url, stack_urls.redis_url, ",".join(node.url for node in cluster))


@pytest_asyncio.fixture(loop_scope="session")
async def cluster_engine(cluster_urls: StackUrls) -> AsyncIterator[AsyncElasticsearch]:
    client, _ = await create_engine_client(cluster_urls.elasticsearch_node, request_timeout=60)
    try:
        yield client
    finally:
        await client.close()


@pytest_asyncio.fixture(loop_scope="session")
async def cluster_alias(cluster_engine: AsyncElasticsearch) -> AsyncIterator[str]:
    alias = f"c{uuid.uuid4().hex[:10]}_products"
    yield alias
    await cluster_engine.indices.delete(index=f"{alias}*", ignore_unavailable=True, allow_no_indices=True)


async def _green(engine: AsyncElasticsearch, index: str, timeout: float = 120) -> str:
    health = await engine.options(request_timeout=timeout + 10).cluster.health(
        index=index, wait_for_status="green", timeout=f"{timeout:.0f}s"
    )
    return str(health["status"])


# --- the same answers ------------------------------------------------------------------------

# (query string, whether its order is fully determined by the sort). Relevance order depends on
# per-shard term statistics, so for those every page is fetched and the pages' ids are compared as
# one set: the same matches, each on exactly one page.
QUERIES = [
    ("sort=newest&size=50", True),
    ("sort=price_asc&size=20&page=3", True),
    ("sort=price_desc&category=props,cosplay&size=30", True),
    ("sort=rating&in_stock=true&min_price=10&max_price=80&size=25&page=2", True),
    ("q=wand&size=100", False),
    ("q=harry+potter&size=100&in_stock=true", False),
    ("q=official&category=apparel&size=100", False),
]


async def _answer(client: TestClient, query: str, ordered: bool) -> dict[str, Any]:
    response = await client.get(f"/api/search?{query}")
    assert response.status == 200, query
    assert response.headers["X-Search-Backend"] == "elasticsearch", query
    body = {key: value for key, value in (await response.json()).items() if key != "took_ms"}
    if not ordered:
        ids = [item["id"] for item in body.pop("items")]
        for page in range(2, body["pages"] + 1):
            more = await client.get(f"/api/search?{query}&page={page}")
            ids += [item["id"] for item in (await more.json())["items"]]
        assert len(ids) == len(set(ids)) == body["total"], query  # no page overlaps or skips
        body["ids"] = sorted(ids)
    return body


async def test_answers_on_three_shards_equal_those_of_one_node(
    search_catalog: SearchCatalog,
    stack_urls: StackUrls,
    cluster_urls: StackUrls,
    cluster_engine: AsyncElasticsearch,
    cluster_alias: str,
) -> None:
    conn = await asyncpg.connect(search_catalog.database_url)
    try:
        index = await load_index(conn, cluster_engine, cluster_alias, shards=SHARDS, replicas=1)
    finally:
        await conn.close()
    assert await _green(cluster_engine, index) == "green"
    on_cluster = SearchCatalog(search_catalog.database_url, cluster_alias, index)
    one = TestClient(TestServer(create_app(proxy_settings(search_catalog, stack_urls, cache_enabled=False))))
    three = TestClient(TestServer(create_app(proxy_settings(on_cluster, cluster_urls, cache_enabled=False))))
    async with one, three:
        for query, ordered in QUERIES:
            expected = await _answer(one, query, ordered)
            assert expected["total"] > 0, query
            assert await _answer(three, query, ordered) == expected, query


async def test_sniffing_learns_every_node_from_one_and_keeps_plain_json(cluster: list[ServerProcess]) -> None:
    client, info = await create_engine_client(cluster[0].url, access=EngineAccess(sniff=True), request_timeout=60)
    try:
        assert (await client.cluster.health())["number_of_nodes"] == NODES  # the first request sniffs
        nodes = client.transport.node_pool.all()
        assert {f"http://{node.config.host}:{node.config.port}" for node in nodes} == {n.url for n in cluster}
        # Sniffed nodes are built from the same class: OpenSearch's plain JSON holds on every one.
        assert info.plain_json and all(isinstance(node, PlainJsonNode) for node in nodes)
        for _ in range(2 * NODES):  # round robin: every node answers once at least
            assert (await client.info())["version"]["distribution"] == "opensearch"
    finally:
        await client.close()


# --- a rebuild on the cluster -----------------------------------------------------------------


async def test_a_reindex_builds_the_configured_layout_and_swaps_the_alias_on_the_cluster(
    cluster_urls: StackUrls,
    cluster_engine: AsyncElasticsearch,
    database_url: str,
    cluster_alias: str,
    redis_prefix: str,
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await seed_catalog(conn, 600, seed=3)
        settings = indexer_settings(
            cluster_urls, database_url, cluster_alias, redis_prefix, index_shards=SHARDS, index_replicas=1
        )
        first = await run_reindex(settings, asyncio.Event())
        second = await run_reindex(settings, asyncio.Event())
        targets = await cluster_engine.indices.get_alias(name=cluster_alias)
        assert list(targets.body) == [second.index] and first.index != second.index
        assert not await cluster_engine.indices.exists(index=first.index)
        layout = (await cluster_engine.indices.get_settings(index=second.index)).body[second.index]["settings"]
        assert (layout["index"]["number_of_shards"], layout["index"]["number_of_replicas"]) == ("3", "1")
        assert await _green(cluster_engine, second.index) == "green"
        shards = cast(list[dict[str, str]], (await cluster_engine.cat.shards(index=second.index, format="json")).body)
        assert len({shard["node"] for shard in shards}) == NODES  # spread over every node
        expected = await active_products(conn)
        assert await indexed_catalog(cluster_engine, cluster_alias) == expected
    finally:
        await conn.close()


# --- /readyz and the cluster's health ---------------------------------------------------------


async def _readyz(client: TestClient) -> tuple[int, dict[str, Any]]:
    response = await client.get("/readyz")
    return response.status, await response.json()


async def test_readyz_follows_the_clusters_health(
    search_catalog: SearchCatalog, cluster_urls: StackUrls, cluster_engine: AsyncElasticsearch, cluster_alias: str
) -> None:
    """Green: ready. Yellow (a replica with no node to go to): ready, and says so. Red (a primary
    that can be allocated nowhere): degraded, and searches come from the fallback."""
    layouts = {
        "green": index_settings(shards=SHARDS, replicas=1),
        "yellow": index_settings(shards=1, replicas=NODES),
        "red": {**index_settings(shards=1, replicas=0), "routing.allocation.require._name": "nowhere"},
    }
    for health, layout in layouts.items():
        alias, index = f"{cluster_alias}_{health}", f"{cluster_alias}_{health}_v1"
        await cluster_engine.indices.create(
            index=index,
            settings=layout,
            mappings=index_mappings(),
            aliases={alias: {}},
            wait_for_active_shards="0",
        )
        catalog = SearchCatalog(search_catalog.database_url, alias, index)
        settings = proxy_settings(catalog, cluster_urls, cache_enabled=False)
        async with TestClient(TestServer(create_app(settings))) as client:
            if health == "green":
                await _green(cluster_engine, index)
            status, body = await _readyz(client)
            search = await client.get("/api/search?q=wand")
            assert search.status == 200, health
            if health != "red":
                # Ready: searches come from the engine. One search may still fall back while the
                # new index's shards start on a busy CI box (a clean-clone run saw one 'postgres'
                # right after a 'ready'); within 10 s one must come from the engine.
                deadline = time.monotonic() + 10
                while search.headers["X-Search-Backend"] != "elasticsearch" and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                    search = await client.get("/api/search?q=wand")
                    assert search.status == 200, health
            if health == "red":
                assert (status, body["status"]) == (200, "degraded")
                assert body["checks"]["elasticsearch"] == {"ok": False, "detail": "cluster red"}
                assert search.headers["X-Search-Backend"] == "postgres"
            else:
                assert (status, body["status"]) == (200, "ready"), body
                detail = "ok" if health == "green" else "cluster yellow"
                assert body["checks"]["elasticsearch"] == {"ok": True, "detail": detail}
                assert search.headers["X-Search-Backend"] == "elasticsearch"


# --- losing a node --------------------------------------------------------------------------

# The figures (500 changes/s, 50 searches/s) run with HOS_SOAK=1 (make test-soak). On
# CI's two cores, three engine nodes, the indexer, the proxy and this load share the CPUs: at the
# issue's rate the lag passed 5 s before the kill in two of three quiet runs, so the default run
# asks a rate those cores sustain. HOS_CLUSTER_CHANGES_PER_S sets it; the failure message shows
# the lag before the kill to tell an overloaded machine from a slow recovery.
_SOAK = bool(os.environ.get("HOS_SOAK"))
CHANGES_PER_S = int(os.environ.get("HOS_CLUSTER_CHANGES_PER_S") or (500 if _SOAK else 150))
SEARCHES_PER_S = 50 if _SOAK else 20
WORDS = ("wand", "cloak", "potter", "costume", "replica", "mug", "poster", "sword", "ring", "map")


async def _search(client: TestClient, stop: asyncio.Event, answers: list[tuple[float, int, str]]) -> None:
    """SEARCHES_PER_S searches started on a fixed schedule (an open model: a slow answer does not
    slow the arrivals), each recorded as (start time, status, backend)."""
    rng = random.Random(7)

    async def one() -> None:
        started = time.monotonic()
        response = await client.get(f"/api/search?q={rng.choice(WORDS)}&page={rng.randint(1, 3)}")
        await response.read()
        answers.append((started, response.status, response.headers.get("X-Search-Backend", "")))

    await at_rate(SEARCHES_PER_S, stop, one)


async def _sample_lag(metrics_url: str, stop: asyncio.Event, samples: list[tuple[float, float]]) -> None:
    """The indexer's ``search_indexer_lag_seconds`` every 100 ms, from its metrics listener."""
    async with aiohttp.ClientSession() as session:
        while not stop.is_set():
            async with session.get(metrics_url) as response:
                text = await response.text()
            value = next(
                line.split()[1] for line in text.splitlines() if line.startswith("search_indexer_lag_seconds ")
            )
            samples.append((time.monotonic(), float(value)))
            await asyncio.sleep(0.1)


async def _node_with_most_primaries(engine: AsyncElasticsearch, alias: str, nodes: list[ServerProcess]) -> int:
    shards = cast(list[dict[str, str]], (await engine.cat.shards(index=alias, format="json")).body)
    primaries = [shard["node"] for shard in shards if shard["prirep"] == "p"]
    name = max(set(primaries), key=primaries.count)
    return int(name.rsplit("-", 1)[1]) - 1  # node names are hos-dev-1 .. hos-dev-N


async def _versions(engine: AsyncElasticsearch, alias: str) -> dict[int, int]:
    await engine.indices.refresh(index=alias)
    response = await engine.search(index=alias, size=10_000, source=False, version=True, query={"match_all": {}})
    return {int(hit["_id"]): int(hit["_version"]) for hit in response["hits"]["hits"]}


@pytest.mark.timeout(600)
async def test_losing_the_node_with_most_primaries_loses_no_change_and_answers_no_5xx(
    cluster: list[ServerProcess],
    cluster_urls: StackUrls,
    cluster_engine: AsyncElasticsearch,
    database_url: str,
    cluster_alias: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    conn = await asyncpg.connect(database_url)
    await seed_catalog(conn, 2000, seed=5)
    ids = [int(row["id"]) for row in await conn.fetch("SELECT id FROM products")]
    # The indexer is a process of its own, as deployed: in this test's event loop it would share
    # one core with the proxy, the writer and the searcher, and fall behind for that alone.
    metrics_port = free_port()
    settings = indexer_settings(cluster_urls, database_url, cluster_alias, redis_prefix, metrics_port=metrics_port)
    env = {
        **settings_env(settings),
        "SEARCH_INDEX_SHARDS": str(SHARDS),
        "SEARCH_INDEX_REPLICAS": "1",
        "INDEXER_BULK_TIMEOUT_S": "5",
        # Batches of a quarter second: at 20 ms (the other tests' setting) each batch is a bulk
        # round trip to every shard copy, and that overhead alone fell behind 500 changes/s here.
        "INDEXER_LINGER_MS": "250",
        # Never pruned after the start: each changed product keeps its last seq, the version to expect.
        "INDEXER_PRUNE_INTERVAL_S": "3600",
    }
    indexer = spawn_indexer(env, tmp_path / "indexer.log")  # builds the index: there is none yet
    catalog = SearchCatalog(database_url, cluster_alias, "")
    # The fallback sized for the searches it may have to take over alone (the default of 4 at a
    # time sheds a 50/s burst with 503s when a saturated 2-core machine makes each one slow).
    proxy = create_app(
        proxy_settings(
            catalog,
            cluster_urls,
            cache_enabled=False,
            engine_timeout_ms=2_000,
            fallback_max_concurrency=16,
            fallback_queue_ms=500,
        )
    )
    stop = asyncio.Event()
    written: list[int] = []
    answers: list[tuple[float, int, str]] = []
    lag: list[tuple[float, float]] = []
    victim: ServerProcess | None = None
    try:
        await eventually(
            lambda: cluster_engine.indices.exists_alias(name=cluster_alias), timeout=120, what="the index built"
        )
        assert await _green(cluster_engine, cluster_alias) == "green"
        async with TestClient(TestServer(proxy)) as client:
            tasks = [
                asyncio.ensure_future(write_changes(database_url, ids, CHANGES_PER_S, stop, written)),
                asyncio.ensure_future(_search(client, stop, answers)),
                asyncio.ensure_future(_sample_lag(f"http://127.0.0.1:{metrics_port}/metrics", stop, lag)),
            ]
            await asyncio.sleep(5)
            victim = cluster[await _node_with_most_primaries(cluster_engine, cluster_alias, cluster)]
            victim.process.kill()  # SIGKILL
            killed_at = time.monotonic()
            # The stream goes on until the lag has been under 5 s for 5 s, at most 60 s after the kill.
            while time.monotonic() - killed_at < 60:
                await asyncio.sleep(0.5)
                recent = [value for at, value in lag if at > time.monotonic() - 5]
                if time.monotonic() - killed_at > 10 and recent and max(recent) < 5:
                    break
            stop.set()
            await asyncio.gather(*tasks)
        after = [(at, status, backend) for at, status, backend in answers if at >= killed_at]
        assert after and len(answers) > 10 * SEARCHES_PER_S  # the searches went on through the loss
        failed = [(round(at - killed_at, 1), status, backend) for at, status, backend in answers if status >= 500]
        # With the lag around the kill: a machine too busy for the rate shows it in both.
        lag_seen = _timeline([(at - killed_at, value) for at, value in lag])
        assert not failed, (
            f"{len(failed)} of {len(answers)} answers were 5xx (seconds after the kill): {failed[:20]}; lag {lag_seen}"
        )
        assert {backend for _, _, backend in answers} <= {"elasticsearch", "postgres"}
        assert sum(written) > 5 * CHANGES_PER_S
        # Once the writes stop, the index converges to the catalog: ids, prices, versions.
        await eventually(
            lambda: _index_equals_catalog(cluster_engine, cluster_alias, conn),
            timeout=60,
            what="index equal to the active products",
        )
        last_seq = {
            int(r["product_id"]): int(r["seq"])
            for r in await conn.fetch("SELECT product_id, max(seq) AS seq FROM search_outbox GROUP BY product_id")
        }
        versions = await _versions(cluster_engine, cluster_alias)
        changed = {pid: seq for pid, seq in last_seq.items() if pid in versions}
        assert changed and all(versions[pid] == seq for pid, seq in changed.items())
        # The killed node comes back on its own home and ports and the cluster heals.
        restart_opensearch(victim)
        assert await _green(cluster_engine, cluster_alias, timeout=180) == "green"
        nodes = (await cluster_engine.cat.nodes(format="json")).body
        assert len(nodes) == NODES
        # Last, so that a machine too slow for the rate still shows whether the rest held.
        since_kill = [(at - killed_at, value) for at, value in lag if at >= killed_at]
        over = [at for at, value in since_kill if value >= 5]
        timeline = _timeline([(at - killed_at, value) for at, value in lag])
        log_tail = (tmp_path / "indexer.log").read_text(errors="replace")[-3000:]
        message = f"lag over 5 s until {max(over, default=0):.1f} s after the kill: {timeline}\n{log_tail}"
        assert not over or max(over) < 60, message
        assert since_kill[-1][1] < 5, timeline
    finally:
        stop.set()
        indexer.terminate()
        indexer.wait(30)
        await conn.close()
        if victim is not None and not victim.running():
            restart_opensearch(victim)


def _timeline(samples: list[tuple[float, float]]) -> str:
    """The highest lag in each 5 s around the kill (at 0), for a failure's message."""
    bins: dict[int, float] = {}
    for at, value in samples:
        key = int(at // 5) * 5
        bins[key] = max(bins.get(key, 0.0), value)
    return ", ".join(f"{at:+d}s: {value:.1f}" for at, value in sorted(bins.items()))


async def _index_equals_catalog(engine: AsyncElasticsearch, alias: str, conn: asyncpg.Connection) -> bool:
    return await indexed_catalog(engine, alias) == await active_products(conn)


def test_the_cluster_runs_every_node_as_its_own_process(cluster: list[ServerProcess]) -> None:
    pids = {node.pid for node in cluster}
    assert len(pids) == NODES and all(node.running() for node in cluster)
    homes = {Path(node.log_path).parent for node in cluster}
    assert len(homes) == NODES
