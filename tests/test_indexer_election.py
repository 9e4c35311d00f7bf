"""One active indexer per name and alias (``indexer/election.py``): real processes, real Postgres
and engine. A second indexer stands by without writing, takes over within seconds when the
active one is SIGKILLed, stopped, deposed or cut off from Postgres, and the index ends up equal
to the catalog every time.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from functools import partial
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from aiohttp import ClientError, ClientSession, ClientTimeout
from elasticsearch import AsyncElasticsearch
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families

from catalog.config import ConfigError
from devstack.servers import free_port
from devstack.stack import StackUrls
from indexer.election import election_key, lock_tag
from indexer.service import run_reindex
from indexer.settings import IndexerSettings
from tests.indexer_support import (
    TcpProxy,
    add_product,
    add_products,
    add_seller,
    eventually,
    index_matches_catalog,
    indexed,
    running_indexer,
    settings_env,
    spawn_indexer,
)

LEASE_S = 2.0  # the election lease of every indexer here: a cut-off holder is replaced within it
BULK_TIMEOUT_S = 5.0
TAKEOVER_BOUND_S = 10.0  # generous: a takeover takes well under a second on loopback
ACTIVE = "search_indexer_active"
STANDBY_SINCE = "search_indexer_standby_since_timestamp_seconds"
INDEXED = "search_indexer_documents_indexed_total"
SEEN = "search_indexer_changes_seen_total"
LOCK_LOST = 'search_indexer_errors_total{kind="lock_lost"}'


class IndexerProcess:
    """``python -m indexer`` with its own metrics port and log file."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log

    async def metrics(self) -> dict[str, float]:
        """Every sample by name (with its labels, if any); empty while /metrics does not answer."""
        try:
            async with (
                ClientSession() as session,
                session.get(f"http://127.0.0.1:{self.port}/metrics", timeout=ClientTimeout(total=2)) as response,
            ):
                text = await response.text()
        except (ClientError, TimeoutError):
            return {}
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples

    async def active(self) -> bool:
        return (await self.metrics()).get(ACTIVE) == 1

    async def standing_by(self) -> bool:
        samples = await self.metrics()
        return samples.get(ACTIVE) == 0 and samples.get(STANDBY_SINCE, 0) > 0

    def logged(self, text: str) -> bool:
        return text in self.log.read_text()

    async def says(self, text: str) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"indexer exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        return self.logged(text)


class Indexers:
    def __init__(self, settings: IndexerSettings, tmp_path: Path) -> None:
        self.settings = settings
        self.tmp_path = tmp_path
        self.started: list[IndexerProcess] = []

    def start(self, label: str, *args: str, **env: str) -> IndexerProcess:
        port = free_port()
        log = self.tmp_path / f"indexer-{label}.log"
        full = {
            **settings_env(self.settings),
            "INDEXER_METRICS_PORT": str(port),
            "INDEXER_LEASE_S": str(LEASE_S),
            # Also when a takeover's re-read happens: soon enough to be seen here (and still long
            # enough for a cold engine to create the first index).
            "INDEXER_BULK_TIMEOUT_S": str(BULK_TIMEOUT_S),
            "INDEXER_PRUNE_INTERVAL_S": "0.5",
            **env,
        }
        started = IndexerProcess(spawn_indexer(full, log, *args), port, log)
        self.started.append(started)
        return started


@pytest_asyncio.fixture(loop_scope="session")
async def indexers(settings: IndexerSettings, tmp_path: Path) -> AsyncIterator[Indexers]:
    """Indexer processes started by the test; any still running at the end are killed."""
    started = Indexers(settings, tmp_path)
    yield started
    for indexer in started.started:
        if indexer.proc.poll() is None:
            indexer.proc.kill()
            await asyncio.to_thread(indexer.proc.wait, 10)


async def _active_and_standby(
    engine: AsyncElasticsearch, db: asyncpg.Connection, indexers: Indexers
) -> tuple[IndexerProcess, IndexerProcess]:
    """A streaming (and the index in sync), then B started against the same database and alias."""
    a = indexers.start("a")
    await eventually(lambda: index_matches_catalog(engine, indexers.settings.search_index, db), what="A's first sync")
    await eventually(a.active, what="A active")
    b = indexers.start("b")
    await eventually(b.standing_by, what="B reporting standby")
    await eventually(lambda: b.says("standby: indexer main is active elsewhere, waiting"), what="B logging standby")
    return a, b


async def _lock_holder(db: asyncpg.Connection, alias: str, name: str = "main") -> int | None:
    classid, objid = lock_tag(election_key(name, alias))
    pid = await db.fetchval(
        """SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = $1 AND objid = $2
              AND objsubid = 1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
        classid,
        objid,
    )
    return None if pid is None else int(pid)


async def _takeover_seconds(standby: IndexerProcess, since: float) -> float:
    await eventually(standby.active, timeout=30, what="the standby taking over")
    return time.monotonic() - since


async def test_a_second_indexer_stands_by_and_writes_nothing_while_the_first_streams(
    settings: IndexerSettings, db: asyncpg.Connection, engine: AsyncElasticsearch, indexers: Indexers
) -> None:
    alias = settings.search_index
    seller = await add_seller(db)
    ids = await add_products(db, seller, 200)
    a, b = await _active_and_standby(engine, db, indexers)
    assert b.logged("'hos-search indexer main'"), "the standby names who holds the lock"
    for i in range(60):
        await db.execute("UPDATE products SET price = $2 WHERE id = $1", ids[i], 100 + i)
    # `hos-search reindex` still runs beside the elected streamer (it has its own lock).
    await run_reindex(settings, asyncio.Event())
    await add_product(db, seller, "Time-Turner")
    await eventually(lambda: index_matches_catalog(engine, alias, db), what="A streaming the changes")
    a_samples, b_samples = await a.metrics(), await b.metrics()
    assert a_samples[ACTIVE] == 1 and a_samples[INDEXED] > 0 and LOCK_LOST not in a_samples
    assert b_samples[ACTIVE] == 0 and b_samples[STANDBY_SINCE] > 0
    assert b_samples[INDEXED] == 0 and b_samples[SEEN] == 0, "the standby read or wrote"
    assert b.proc.poll() is None and not b.logged("catching up")
    b.proc.send_signal(signal.SIGTERM)  # a standby stops at once, and cleanly
    assert await asyncio.to_thread(b.proc.wait, 10) == 0 and not b.logged("Traceback")


async def test_a_standby_takes_over_within_seconds_when_the_active_is_sigkilled_and_loses_nothing(
    settings: IndexerSettings,
    db: asyncpg.Connection,
    engine: AsyncElasticsearch,
    database_url: str,
    indexers: Indexers,
) -> None:
    alias = settings.search_index
    seller = await add_seller(db)
    ids = await add_products(db, seller, 500)
    a, b = await _active_and_standby(engine, db, indexers)
    rng = random.Random(14)
    writer = await asyncpg.connect(database_url)
    takeover: asyncio.Future[float] | None = None
    try:
        # Single-row commits before, during and after the takeover.
        for i in range(300):
            await writer.execute("UPDATE products SET price = $2 WHERE id = $1", rng.choice(ids), 1 + i)
            if i == 100:
                a.proc.send_signal(signal.SIGKILL)
                takeover = asyncio.ensure_future(_takeover_seconds(b, time.monotonic()))
            await asyncio.sleep(0.005)
    finally:
        await writer.close()
    assert takeover is not None
    seconds = await takeover
    assert seconds < TAKEOVER_BOUND_S, f"the standby took {seconds:.1f}s to take over"
    assert a.proc.wait(10) == -signal.SIGKILL
    await eventually(lambda: index_matches_catalog(engine, alias, db), what="every change indexed after the takeover")
    assert (await b.metrics())[INDEXED] > 0
    # Once the longest a write of A may have been in flight has passed, B re-reads from where it took over.
    await eventually(lambda: b.says("re-reading once from seq"), timeout=20, what="the re-read after the takeover")
    assert await index_matches_catalog(engine, alias, db)


async def test_sigterm_of_the_active_hands_over_to_the_standby_without_a_rebuild(
    settings: IndexerSettings, db: asyncpg.Connection, engine: AsyncElasticsearch, indexers: Indexers
) -> None:
    alias = settings.search_index
    seller = await add_seller(db)
    await add_products(db, seller, 100)
    a = indexers.start("a")
    await eventually(lambda: index_matches_catalog(engine, alias, db), what="A's first sync")
    (live,) = (await engine.indices.get_alias(name=alias)).body
    # A standby asked to rebuild at start leaves that to whoever holds the lock.
    b = indexers.start("b", "--reindex-on-start")
    await eventually(b.standing_by, what="B reporting standby")
    await add_products(db, seller, 300, prefix="Burst")  # a batch may be in flight when the signal lands
    a.proc.send_signal(signal.SIGTERM)
    seconds = await _takeover_seconds(b, time.monotonic())
    assert seconds < TAKEOVER_BOUND_S, f"the standby took {seconds:.1f}s to take over"
    assert await asyncio.to_thread(a.proc.wait, 20) == 0
    assert not a.logged("Traceback") and not a.logged("lost the election lock"), "a clean handover"
    product = await add_product(db, seller, "Marauder's Map")
    await eventually(lambda: indexed(engine, alias, product), what="B streaming")
    await eventually(lambda: index_matches_catalog(engine, alias, db), what="nothing lost in the handover")
    assert list((await engine.indices.get_alias(name=alias)).body) == [live], "the standby rebuilt the index"
    assert b.logged("no start-up reindex")


async def test_an_indexer_whose_lock_session_is_terminated_abandons_its_batch_and_stands_by(
    settings: IndexerSettings,
    db: asyncpg.Connection,
    engine: AsyncElasticsearch,
    stack_urls: StackUrls,
    indexers: Indexers,
) -> None:
    alias = settings.search_index
    seller = await add_seller(db)
    ids = await add_products(db, seller, 50)
    cut = TcpProxy(stack_urls.elasticsearch_node)
    await cut.open()
    try:
        a = indexers.start("a", ELASTICSEARCH_NODE=cut.url)
        await eventually(lambda: index_matches_catalog(engine, alias, db), what="A's first sync")
        await eventually(a.active, what="A active")
        b = indexers.start("b")
        await eventually(b.standing_by, what="B reporting standby")
        # A's next bulk request hangs: A has read and fetched the change, and is writing it.
        cut.hanging = True
        seen = (await a.metrics())[SEEN]
        hung_at = time.monotonic()
        await db.execute("UPDATE products SET price = 77 WHERE id = $1", ids[0])
        await eventually(lambda: _moved(a, SEEN, seen), what="A reading the change")
        written = (await a.metrics())[INDEXED]
        holder = await _lock_holder(db, alias)
        assert holder is not None
        await db.execute("SELECT pg_terminate_backend($1)", holder)
        seconds = await _takeover_seconds(b, time.monotonic())
        assert seconds < TAKEOVER_BOUND_S
        await eventually(lambda: a.says("lost the election lock"), what="A noticing")
        await eventually(a.standing_by, what="A standing by")
        # A's way to the engine works again: had it kept its batch, it would write it now.
        cut.hanging = False
        await eventually(lambda: index_matches_catalog(engine, alias, db), what="B writing the change")
        # Past the moment A's hung request times out (INDEXER_BULK_TIMEOUT_S) and would be retried.
        await asyncio.sleep(max(0.0, hung_at + BULK_TIMEOUT_S + 1.5 - time.monotonic()))
        samples = await a.metrics()
        assert samples[INDEXED] == written, "A wrote after losing its lock"
        assert samples[LOCK_LOST] >= 1 and samples[ACTIVE] == 0
        assert await _lock_holder(db, alias) not in (None, holder)
    finally:
        await cut.close()


async def test_a_frozen_active_is_replaced_within_the_lease_and_writes_nothing_when_it_wakes(
    settings: IndexerSettings, db: asyncpg.Connection, engine: AsyncElasticsearch, indexers: Indexers
) -> None:
    """A stops dead with its connections open (SIGSTOP: a hung host, a long pause) — nothing
    closes its lock session, so only the lease can end it. B takes over; when A wakes up it
    finds notifications of changes waiting, and must not write them."""
    alias = settings.search_index
    seller = await add_seller(db)
    ids = await add_products(db, seller, 50)
    a, b = await _active_and_standby(engine, db, indexers)
    written = (await a.metrics())[INDEXED]
    a.proc.send_signal(signal.SIGSTOP)
    try:
        frozen_at = time.monotonic()
        for product in ids[:10]:
            await db.execute("UPDATE products SET price = price + 1 WHERE id = $1", product)
        seconds = await _takeover_seconds(b, frozen_at)
        # Only once the server ended A's silent session: a lease after A's last heartbeat, which
        # came at most a fifth of a lease before the freeze.
        assert LEASE_S * 0.5 < seconds < LEASE_S + TAKEOVER_BOUND_S, f"took over after {seconds:.1f}s"
        await eventually(lambda: index_matches_catalog(engine, alias, db), what="B writing the changes")
    finally:
        a.proc.send_signal(signal.SIGCONT)
    await eventually(a.standing_by, what="A, awake, standing by")
    samples = await a.metrics()
    assert samples[INDEXED] == written, "A wrote after its lease ran out"
    assert samples[LOCK_LOST] >= 1
    await db.execute("UPDATE products SET price = price + 1 WHERE id = $1", ids[-1])
    await eventually(lambda: index_matches_catalog(engine, alias, db), what="B streaming on")
    assert (await a.metrics())[INDEXED] == written


async def test_a_lone_indexer_whose_lock_session_is_terminated_takes_the_lock_again(
    settings: IndexerSettings, db: asyncpg.Connection, engine: AsyncElasticsearch
) -> None:
    alias = settings.search_index
    seller = await add_seller(db)
    first = await add_product(db, seller, "Sorting Hat")
    async with running_indexer(replace(settings, lease_s=LEASE_S)) as metrics:
        await eventually(lambda: indexed(engine, alias, first), what="indexed")
        holder = await _lock_holder(db, alias)
        assert holder is not None
        await db.execute("SELECT pg_terminate_backend($1)", holder)
        await eventually(lambda: _again(db, alias, holder), what="the lock taken again")
        await eventually(lambda: _value(metrics.lock_acquisitions, 2), what="the second acquisition counted")
        assert metrics.errors.labels(kind="lock_lost")._value.get() == 1 and metrics.active._value.get() == 1
        second = await add_product(db, seller, "Invisibility Cloak")
        await eventually(lambda: indexed(engine, alias, second), what="streaming again")


async def test_indexers_of_different_aliases_or_names_are_each_active(
    settings: IndexerSettings, db: asyncpg.Connection, engine: AsyncElasticsearch, index_alias: str
) -> None:
    other_alias = replace(settings, search_index=f"{index_alias}_other")  # deleted with index_alias*
    other_name = replace(settings, name="shadow")
    async with (
        running_indexer(settings) as main,
        running_indexer(other_alias) as beside,
        running_indexer(other_name) as named,
    ):
        assert main.active._value.get() == beside.active._value.get() == named.active._value.get() == 1
        product = await add_product(db, await add_seller(db), "Golden Snitch")
        for alias in (settings.search_index, other_alias.search_index):
            await eventually(partial(indexed, engine, alias, product), what=f"indexed in {alias}")


def test_the_lock_key_names_the_indexer_and_its_alias() -> None:
    key = election_key("main", "products")
    assert key == election_key("main", "products") and -(2**63) <= key < 2**63
    assert len({key, election_key("main", "products_eu"), election_key("shadow", "products")}) == 3
    classid, objid = lock_tag(key)
    assert ((classid << 32) | objid) == key % 2**64


@pytest.mark.parametrize("value", ["0.5", "soon", "7200"])
def test_a_bad_lease_is_refused_naming_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="INDEXER_LEASE_S"):
        IndexerSettings.from_env({"INDEXER_LEASE_S": value})


async def _moved(indexer: IndexerProcess, sample: str, before: float) -> bool:
    return (await indexer.metrics()).get(sample, before) > before


async def _value(counter: Counter, expected: float) -> bool:
    return bool(counter._value.get() == expected)


async def _again(db: asyncpg.Connection, alias: str, old: int) -> bool:
    return await _lock_holder(db, alias) not in (None, old)


async def test_a_standby_that_cannot_reach_the_engine_when_it_takes_over_waits_for_it(
    settings: IndexerSettings, db: asyncpg.Connection, engine: AsyncElasticsearch, indexers: Indexers
) -> None:
    """Taking over means checking the index first: with the engine cut off at that moment the
    standby died of the connection error (found by tests/test_indexer_chaos.py) instead of
    waiting for the engine as the stream does."""
    alias = settings.search_index
    seller = await add_seller(db)
    await add_products(db, seller, 50)
    link = TcpProxy(settings.elasticsearch_node)
    await link.open()
    try:
        a = indexers.start("a")
        await eventually(lambda: index_matches_catalog(engine, alias, db), what="A's first sync")
        await eventually(a.active, what="A active")
        b = indexers.start("b", ELASTICSEARCH_NODE=link.url)
        await eventually(b.standing_by, what="B reporting standby")
        await link.close()
        a.proc.send_signal(signal.SIGKILL)
        await eventually(
            lambda: b.says("engine unreachable while preparing the index"), what="B waiting for the engine"
        )
        assert b.proc.poll() is None, b.log.read_text()[-3000:]
        await add_product(db, seller, "Marauder's Map")
        await link.open()
        await eventually(b.active, timeout=30, what="B active once the engine answers")
        await eventually(lambda: index_matches_catalog(engine, alias, db), what="B streaming the change")
        assert b.proc.poll() is None and not b.logged("Traceback")
    finally:
        await link.close()
