"""Random catalog writes under random faults: the index must end up equal to the catalog.

Several writers commit (and roll back) every kind of change — price and name updates, inserts,
deletes, status changes, seller renames, and multi-row transactions held open so that commits
land out of seq order — while a fault loop SIGKILLs the indexer process and restarts it, cuts
the engine off through a TCP proxy, terminates the indexer's Postgres backends, and starts
full reindexes (``python -m indexer reindex``) that race the streamer, some of them SIGKILLed. When the
writes stop and the faults heal, the index must hold exactly the active products with their
current data.

Runs for a few seconds in ``make test``; ``make test-soak`` (HOS_SOAK=1) runs it for a minute.
The random seed is printed on failure, so a failing run can be replayed with HOS_CHAOS_SEED.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
from elasticsearch import AsyncElasticsearch

from devstack.stack import StackUrls
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
)

ROOT = Path(__file__).resolve().parent.parent
DURATION_S = 60.0 if os.environ.get("HOS_SOAK") else 8.0
STATUSES = ("active", "active", "active", "draft", "archived")


class Chaos:
    def __init__(self, database_url: str, rng: random.Random, sellers: list[int], products: list[int]) -> None:
        self.database_url = database_url
        self.rng = rng
        self.sellers = sellers
        self.products = products
        self.writer_pids: set[int] = set()
        self.commits = 0
        self.rollbacks = 0

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


class _Rollback(Exception):
    pass


def _spawn(settings_env_: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "indexer", *args],
            cwd=ROOT,
            env={
                **os.environ,
                **settings_env_,
                "LOG_LEVEL": "info",
                "INDEXER_PRUNE_INTERVAL_S": os.environ.get("CHAOS_PRUNE", "0.5"),
            },
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )


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
    sellers = [await add_seller(db, f"Seller {i}") for i in range(5)]
    products = [p for s in sellers for p in await add_products(db, s, 40)]
    chaos = Chaos(database_url, rng, sellers, products)
    log = tmp_path / "indexer.log"
    proc = _spawn(env, log)
    faults: list[str] = []
    reindexes: list[subprocess.Popen[bytes]] = []
    try:
        until = time.monotonic() + DURATION_S
        writers = [asyncio.ensure_future(chaos.writer(until)) for _ in range(3)]
        while time.monotonic() < until:
            await asyncio.sleep(rng.uniform(0.3, 1.5))
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
                          AND NOT (pid = ANY($1::int[]))""",
                    list(chaos.writer_pids),
                )
        await asyncio.gather(*writers)
        for running in reindexes:  # a reindex may be retrying a cut engine: let it finish
            await asyncio.to_thread(running.wait, 120)
        assert proc.poll() is None, log.read_text()[-3000:]
        context = f"seed {seed}; faults {faults}; {chaos.commits} commits, {chaos.rollbacks} rollbacks"
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
        for child in [proc, *reindexes]:
            if child.poll() is None:
                child.kill()
                child.wait(10)
        await cut.close()
