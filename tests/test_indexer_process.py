"""``python -m indexer`` as a real process: killed mid-stream, stopped with SIGTERM, misconfigured."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from elasticsearch import AsyncElasticsearch

from indexer.settings import IndexerSettings
from tests.indexer_support import (
    add_products,
    add_seller,
    eventually,
    index_matches_catalog,
    indexed,
    settings_env,
    spawn_indexer,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Started indexer processes; any still running at the end are killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def start_indexer(
    settings: IndexerSettings, started: list[subprocess.Popen[bytes]], log: Path, *args: str
) -> subprocess.Popen[bytes]:
    proc = spawn_indexer(settings_env(settings), log, *args)
    started.append(proc)
    return proc


async def _exited(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is not None


async def test_sigkill_mid_stream_then_restart_loses_nothing(
    settings: IndexerSettings,
    db: asyncpg.Connection,
    engine: AsyncElasticsearch,
    database_url: str,
    spawn: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    alias = settings.search_index
    seller = await add_seller(db)
    ids = await add_products(db, seller, 2_000)
    proc = start_indexer(settings, spawn, tmp_path / "indexer.log")
    await eventually(lambda: index_matches_catalog(engine, alias, db), what="initial sync")
    rng = random.Random(3)
    writer = await asyncpg.connect(database_url)
    try:
        for round_ in range(3):
            # A stream of single-row commits, and the process killed while it is applying them.
            for i in range(300):
                await writer.execute("UPDATE products SET price = $2 WHERE id = $1", rng.choice(ids), 1 + i + round_)
                if i == 150:
                    proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            assert proc.returncode == -signal.SIGKILL
            proc = start_indexer(settings, spawn, tmp_path / "indexer.log")
        await eventually(lambda: index_matches_catalog(engine, alias, db), what="every change indexed after restarts")
    finally:
        await writer.close()


async def test_sigterm_stops_cleanly(
    settings: IndexerSettings,
    db: asyncpg.Connection,
    engine: AsyncElasticsearch,
    spawn: list[subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    seller = await add_seller(db)
    ids = await add_products(db, seller, 10)
    log = tmp_path / "indexer.log"
    proc = start_indexer(settings, spawn, log)
    await eventually(lambda: indexed(engine, settings.search_index, ids[-1]), what="indexed")
    await add_products(db, seller, 500)  # a batch may be in flight when the signal lands
    proc.send_signal(signal.SIGTERM)
    await eventually(lambda: _exited(proc), timeout=20, what="exit after SIGTERM")
    output = log.read_text()
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    # Whatever the checkpoint says is indexed really is.
    seq = await db.fetchval("SELECT last_seq FROM search_indexer_checkpoint WHERE name = 'main'")
    done = await db.fetch("SELECT DISTINCT product_id FROM search_outbox WHERE seq <= $1", seq)
    missing = [r["product_id"] for r in done if await indexed(engine, settings.search_index, r["product_id"]) is None]
    assert missing == []


@pytest.mark.parametrize(
    ("env", "code", "needle"),
    [
        ({"SEARCH_INDEX": "Not Valid"}, 2, "SEARCH_INDEX"),
        ({"INDEXER_BATCH_SIZE": "lots"}, 2, "INDEXER_BATCH_SIZE"),
        ({"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere"}, 1, "DATABASE_URL"),
    ],
)
async def test_bad_settings_exit_with_one_line(
    settings: IndexerSettings, env: dict[str, str], code: int, needle: str
) -> None:
    full = {**os.environ, **settings_env(settings), **env}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "indexer", cwd=ROOT, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    # Log lines (timestamped) may come first; the error itself is one plain line.
    lines = [line for line in stderr.decode().splitlines() if not line[:1].isdigit()]
    assert proc.returncode == code
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith("hos-search indexer:"), stderr.decode()


async def test_hos_search_reindex_builds_the_alias_from_the_command_line(
    settings: IndexerSettings, db: asyncpg.Connection, engine: AsyncElasticsearch
) -> None:
    seller = await add_seller(db)
    await add_products(db, seller, 120)
    env = {**os.environ, **settings_env(settings), "LOG_LEVEL": "warning"}
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "hos_search", "reindex"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "reindexed 120 products" in result.stdout
    assert await index_matches_catalog(engine, settings.search_index, db)
    assert await engine.indices.exists_alias(name=settings.search_index)
    # The indexer started next begins where the reindex ended, not at seq 0.
    stream_from = await db.fetchval("SELECT last_seq FROM search_indexer_checkpoint WHERE name = 'main'")
    assert stream_from == await db.fetchval("SELECT max(seq) FROM search_outbox")
