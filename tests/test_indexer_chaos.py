"""Random catalog writes under random faults: the index must end up equal to the catalog.

Several writers commit (and roll back) every kind of change — price and name updates, inserts,
deletes, status changes, seller renames, and multi-row transactions held open so that commits
land out of seq order — while a fault loop SIGKILLs the indexer process and restarts it, cuts
the engine off through a TCP proxy, terminates the indexer's Postgres backends, and starts
full reindexes (``python -m indexer reindex``) that race the streamer, some of them SIGKILLed.
Once per run, a reindex runs under writes faster than its replay: it replays one change per
batch while a flood writer commits two for every one it reads; it must still finish, while the
flood goes on (its replays chased the writes forever before they were bounded). When the writes
stop and the faults heal, the index must hold exactly the active products with their current
data.

Runs for a few seconds in ``make test``; ``make test-soak`` (HOS_SOAK=1) runs it for a minute.
The random seed is printed on failure, so a failing run can be replayed with HOS_CHAOS_SEED.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from elasticsearch import AsyncElasticsearch

from devstack.stack import StackUrls
from indexer.metrics import IndexerMetrics
from indexer.reindex import ReindexError
from indexer.service import run_reindex
from indexer.settings import IndexerSettings
from tests.indexer_support import (
    TcpProxy,
    active_products,
    add_products,
    add_seller,
    eventually,
    index_matches_catalog,
    indexed_catalog,
    indexer_settings,
    settings_env,
    spawn_indexer,
)

DURATION_S = 60.0 if os.environ.get("HOS_SOAK") else 8.0
STATUSES = ("active", "active", "active", "draft", "archived")
FLOOD_TRICKLE_PER_S = 100  # flood writes while the flooded reindex loads or swaps (no replay to outpace)
FLOOD_DEADLINE_S = 60.0  # the flooded reindex, lock waits included, must finish within this
# The flooded reindex's Postgres sessions carry this name so that "terminate" spares them: it
# must be able to finish (a SIGKILLed or terminated reindex is covered by the other faults).
FLOOD_APPLICATION = "hos-chaos-flooded-reindex"


class Chaos:
    def __init__(self, database_url: str, rng: random.Random, sellers: list[int], products: list[int]) -> None:
        self.database_url = database_url
        self.rng = rng
        self.sellers = sellers
        self.products = products
        self.writer_pids: set[int] = set()
        self.commits = 0
        self.rollbacks = 0
        self.flooded = 0  # outbox rows written by the flood

    async def _one_change(self, conn: asyncpg.Connection) -> None:
        rng = self.rng
        kind = rng.choice(["price", "price", "name", "insert", "delete", "status", "rename"])
        product = rng.choice(self.products)
        if kind == "price":
            await conn.execute("UPDATE products SET price = $2 WHERE id = $1", product, rng.randint(1, 500))
        elif kind == "name":
            await conn.execute("UPDATE products SET name = $2 WHERE id = $1", product, f"Renamed {rng.random():.6f}")
        elif kind == "insert":
            new = await conn.fetchval(
                """INSERT INTO products (seller_id, name, category, fandom, price, stock, status)
                   VALUES ($1, $2, 'props', 'Dune', $3, 1, $4) RETURNING id""",
                rng.choice(self.sellers),
                f"New {rng.random():.6f}",
                rng.randint(1, 500),
                rng.choice(STATUSES),
            )
            self.products.append(int(new))
        elif kind == "delete":
            await conn.execute("DELETE FROM products WHERE id = $1", product)
        elif kind == "status":
            await conn.execute("UPDATE products SET status = $2 WHERE id = $1", product, rng.choice(STATUSES))
        else:
            await conn.execute(
                "UPDATE sellers SET name = $2 WHERE id = $1", rng.choice(self.sellers), f"Seller {rng.random():.6f}"
            )

    async def writer(self, until: float) -> None:
        conn = await asyncpg.connect(self.database_url)
        self.writer_pids.add(int(await conn.fetchval("SELECT pg_backend_pid()")))
        try:
            while time.monotonic() < until:
                try:
                    if self.rng.random() < 0.3:
                        # A multi-row transaction held open a while: its seqs commit late.
                        async with conn.transaction():
                            for _ in range(self.rng.randint(2, 5)):
                                await self._one_change(conn)
                            await asyncio.sleep(self.rng.uniform(0, 0.3))
                            if self.rng.random() < 0.2:
                                raise _Rollback
                    else:
                        await self._one_change(conn)
                    self.commits += 1
                except _Rollback:
                    self.rollbacks += 1
                except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                    self.rollbacks += 1  # writers collide on rows; Postgres picks a victim
                await asyncio.sleep(self.rng.uniform(0.002, 0.02))
        finally:
            await conn.close()

    async def flooded_reindex(self, settings: IndexerSettings) -> str:
        """A full reindex whose writes outpace its replay from start to end; how it ended."""
        replay = IndexerMetrics()  # its own: counts the changes its replays read
        flooding = asyncio.Event()
        flooding.set()
        flood = asyncio.ensure_future(self._flood(settings.database_url, replay, flooding))
        deadline = time.monotonic() + FLOOD_DEADLINE_S
        try:
            await eventually(lambda: _flooding(self, flood), what="the flood writing")
            while True:
                try:
                    result = await asyncio.wait_for(
                        run_reindex(settings, asyncio.Event(), replay), deadline - time.monotonic()
                    )
                except ReindexError as exc:
                    if "another reindex" not in str(exc) or time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.1)  # a reindex started by the fault loop holds the lock
                    continue
                except TimeoutError:
                    raise AssertionError(
                        f"the flooded reindex did not finish within {FLOOD_DEADLINE_S:.0f}s "
                        f"({self.flooded} flood writes, {replay.changes_seen._value.get():.0f} changes replayed)"
                    ) from None
                assert not flood.done(), "the flood stopped before the reindex finished"
                return (
                    f"flooded reindex: {result.replayed} changes replayed in {result.seconds:.1f}s "
                    f"under {self.flooded} flood writes"
                )
        finally:
            flooding.clear()
            await flood

    async def _flood(self, database_url: str, replay: IndexerMetrics, flooding: asyncio.Event) -> None:
        """Two price updates for every change the replay reads, and a trickle while it is not
        replaying: faster than the replay, on any machine. Its session is spared by "terminate"
        by name from the start (a pid registered after connecting came too late once)."""
        conn = await asyncpg.connect(database_url)
        started = time.monotonic()
        attempted = 0
        try:
            while flooding.is_set():
                target = 2 * int(replay.changes_seen._value.get()) + int(
                    FLOOD_TRICKLE_PER_S * (time.monotonic() - started)
                )
                burst = min(50, target - attempted)
                if burst > 0:
                    attempted += burst
                    ids = sorted(self.rng.sample(self.products, min(burst, len(self.products))))
                    try:
                        status = await conn.execute(
                            "UPDATE products SET price = price + 1 WHERE id = ANY($1::bigint[])", ids
                        )
                        self.flooded += int(status.split()[-1])
                    except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                        self.rollbacks += 1
                await asyncio.sleep(0.002)
        finally:
            await conn.close()


async def _difference(engine: AsyncElasticsearch, alias: str, db: asyncpg.Connection) -> str:
    """What differs, for the failure message: missing, extra and stale documents, with their outbox rows."""
    expected = await active_products(db)
    actual = await indexed_catalog(engine, alias) or {}
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    stale = sorted(i for i in set(expected) & set(actual) if expected[i] != actual[i])
    details = []
    for pid in (missing + extra + stale)[:5]:
        rows = await db.fetch("SELECT seq, op, txid::text FROM search_outbox WHERE product_id = $1 ORDER BY seq", pid)
        details.append(f"{pid}: want {expected.get(pid)} have {actual.get(pid)} outbox {[tuple(r) for r in rows][-4:]}")
    checkpoints = await db.fetch("SELECT name, last_seq FROM search_indexer_checkpoint")
    return (
        f"missing {missing[:10]} extra {extra[:10]} stale {stale[:10]}; checkpoints {[tuple(c) for c in checkpoints]}; "
        + "; ".join(details)
    )


async def _flooding(chaos: Chaos, flood: asyncio.Future[None]) -> bool:
    if flood.done():
        flood.result()  # raise what it died of
    return chaos.flooded > 0


class _Rollback(Exception):
    pass


def _with_application_name(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query="&".join(filter(None, [parts.query, f"application_name={name}"]))))


def _spawn(settings_env_: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    prune = os.environ.get("CHAOS_PRUNE", "0.5")
    return spawn_indexer({**settings_env_, "INDEXER_PRUNE_INTERVAL_S": prune}, log, *args)


async def test_random_writes_under_random_faults_end_with_the_index_equal_to_the_catalog(
    stack_urls: StackUrls,
    database_url: str,
    db: asyncpg.Connection,
    engine: AsyncElasticsearch,
    index_alias: str,
    redis_prefix: str,
    tmp_path: Path,
) -> None:
    seed = int(os.environ.get("HOS_CHAOS_SEED") or random.randrange(1 << 30))
    rng = random.Random(seed)
    cut = TcpProxy(stack_urls.elasticsearch_node)
    await cut.open()
    settings = indexer_settings(
        stack_urls, database_url, index_alias, redis_prefix, elasticsearch_node=cut.url, bulk_timeout_s=2.0
    )
    env = settings_env(settings)
    # In this process (its replay's metrics drive the flood), straight to the engine (the reindex's
    # own engine calls are not retried through a cut), one change per replay batch.
    flooded_settings = replace(
        settings,
        database_url=_with_application_name(database_url, FLOOD_APPLICATION),
        elasticsearch_node=stack_urls.elasticsearch_node,
        batch_size=1,
    )
    sellers = [await add_seller(db, f"Seller {i}") for i in range(5)]
    products = [p for s in sellers for p in await add_products(db, s, 40)]
    chaos = Chaos(database_url, rng, sellers, products)
    log = tmp_path / "indexer.log"
    proc = _spawn(env, log)
    faults: list[str] = []
    reindexes: list[subprocess.Popen[bytes]] = []
    flooded: asyncio.Future[str] | None = None
    try:
        until = time.monotonic() + DURATION_S
        flood_at = time.monotonic() + rng.uniform(0.3, DURATION_S / 2)
        writers = [asyncio.ensure_future(chaos.writer(until)) for _ in range(3)]
        while time.monotonic() < until:
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            if flooded is None and time.monotonic() >= flood_at:
                faults.append("flooded-reindex")
                flooded = asyncio.ensure_future(chaos.flooded_reindex(flooded_settings))
            fault = rng.choice(["kill", "cut", "terminate", "reindex", "kill-reindex"])
            faults.append(fault)
            if fault == "reindex":
                # A zero-downtime rebuild racing the streamer (and the other faults).
                reindexes.append(_spawn(env, log, "reindex"))
            elif fault == "kill-reindex":
                for running in reindexes:
                    if running.poll() is None:
                        running.send_signal(signal.SIGKILL)
            elif fault == "kill":
                proc.send_signal(signal.SIGKILL)
                await asyncio.to_thread(proc.wait, 10)
                proc = _spawn(env, log)
            elif fault == "cut":
                await cut.close()
                await asyncio.sleep(rng.uniform(0.2, 1.2))
                await cut.open()
            else:
                await db.execute(
                    """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                        WHERE datname = current_database() AND pid <> pg_backend_pid()
                          AND NOT (pid = ANY($1::int[])) AND application_name <> $2""",
                    list(chaos.writer_pids),
                    FLOOD_APPLICATION,
                )
        await asyncio.gather(*writers)
        if flooded is None:  # a short run: the loop ended before its moment came
            faults.append("flooded-reindex")
            flooded = asyncio.ensure_future(chaos.flooded_reindex(flooded_settings))
        try:
            flood_outcome = await flooded
        except Exception as exc:
            raise AssertionError(f"seed {seed}; faults {faults}: {exc}") from exc
        for running in reindexes:  # a reindex may be retrying a cut engine: let it finish
            await asyncio.to_thread(running.wait, 120)
        assert proc.poll() is None, f"seed {seed}; faults {faults}: " + log.read_text()[-3000:]
        context = f"seed {seed}; faults {faults}; {chaos.commits} commits, {chaos.rollbacks} rollbacks; {flood_outcome}"
        try:
            await eventually(lambda: index_matches_catalog(engine, index_alias, db), timeout=60, what="index = catalog")
        except AssertionError:
            raise AssertionError(
                f"index differs from the catalog ({context}; indexer exit status {proc.poll()}): "
                f"{await _difference(engine, index_alias, db)}\n"
                f"indexer log tail:\n{log.read_text()[-4000:]}"
            ) from None
        assert chaos.commits > 0 and faults
    finally:
        if flooded is not None and not flooded.done():
            flooded.cancel()
            await asyncio.gather(flooded, return_exceptions=True)
        for child in [proc, *reindexes]:
            if child.poll() is None:
                child.kill()
                child.wait(10)
        await cut.close()
