"""One active indexer per name and alias: a Postgres advisory lock elects it.

Every ``hos-search indexer`` first takes a session-level advisory lock, :func:`election_key` of
its ``INDEXER_NAME`` and ``SEARCH_INDEX`` (advisory locks are per database, so the database is
part of the key too), on a connection of its own. The one that holds it streams; any other is
a hot standby: it asks for the lock twice a second, and gets it once the holder's session has
ended — a process that exits or is SIGKILLed closes its connection at once, and the server
releases its locks with it. Indexers of other names or aliases hold other keys and run side
by side.

The lock is exactly as good as the session that holds it, so the session is a lease:

- the server ends it after ``INDEXER_LEASE_S`` of silence (``idle_session_timeout``), so a
  holder whose host or network vanished without closing the connection is replaced within the
  lease — without it, Postgres would keep the lock until TCP keepalive gave up (hours);
- the holder confirms the lock every fifth of the lease (a heartbeat reading ``pg_locks`` for
  its own session) and counts itself deposed (:attr:`Lease.lost`) when a heartbeat fails or
  times out, or the moment the session is terminated (``pg_terminate_backend``, a server
  restart, the idle timeout);
- :meth:`Lease.holds` is the fence asked before every bulk request: not lost, and confirmed
  within half the lease. Through silence the server cannot release the lock earlier than a
  full lease after the last confirmation, so a holder cut off from Postgres stops starting
  writes at least half a lease before anyone else can take over.

A write already sent when the lock is lost may still land after the successor's (the engine
does not know about the lock); :mod:`indexer.service` covers that by re-reading once after a
takeover. A session-level lock needs a real session: ``DATABASE_URL`` must not point at a
transaction-pooling PgBouncer.

Never reads the outbox and never writes to the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from indexer.listener import close_quietly
from indexer.metrics import IndexerMetrics
from indexer.sink import wait_or_stop

log = logging.getLogger("hos_search.indexer.election")

# How often a standby asks for the lock: a takeover within half a second of the release. Not a
# blocking pg_advisory_lock: bounded by lock_timeout (to notice a dead connection) it would
# leave an ERROR in the server's log at every bound, forever, for every standby.
STANDBY_POLL_S = 0.5

# The lock a session holds, as pg_locks shows a bigint advisory key (objsubid 1).
_HELD_SQL = """
SELECT EXISTS (SELECT 1 FROM pg_locks
                WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted
                  AND classid = $1 AND objid = $2 AND objsubid = 1)
"""
# Who holds it, for the standby's log line.
_HOLDER_SQL = """
SELECT a.pid, host(a.client_addr) AS client, a.application_name
  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted AND l.classid = $1 AND l.objid = $2 AND l.objsubid = 1
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def election_key(name: str, alias: str) -> int:
    """The advisory-lock key of the indexer ``name`` streaming into ``alias`` (a signed bigint)."""
    digest = hashlib.blake2b(f"hos-search indexer\0{name}\0{alias}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_tag(key: int) -> tuple[int, int]:
    """``(classid, objid)`` of the lock on ``key`` in ``pg_locks``."""
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    return unsigned >> 32, unsigned & 0xFFFF_FFFF


class LockLost(ConnectionError):
    """This indexer no longer holds (or can no longer prove it holds) its election lock."""


class Lease:
    """The election lock, held by the session of ``conn``; see the module docstring."""

    def __init__(
        self, conn: asyncpg.Connection, key: int, lease_s: float, metrics: IndexerMetrics, *, waited_s: float
    ) -> None:
        self._conn = conn
        self._metrics = metrics
        self._tag = lock_tag(key)
        self._lease_s = lease_s
        self._confirmed = time.monotonic()
        self.waited_s = waited_s  # how long this process stood by before it got the lock
        self.lost = asyncio.Event()
        self.reason = ""
        self._heartbeat: asyncio.Task[None] | None = None
        self._released = False
        conn.add_termination_listener(self._on_terminated)

    def start(self) -> None:
        self._heartbeat = asyncio.ensure_future(self._beat())

    def holds(self) -> bool:
        """Whether a write may start now: the lock is not lost and was confirmed within half a lease."""
        return not self.lost.is_set() and time.monotonic() - self._confirmed < self._lease_s / 2

    def lose(self, reason: str) -> None:
        """Count the lock as lost: nothing may be written from now on."""
        if not self.lost.is_set():
            log.warning("lost the election lock (%s): no write starts from now on", reason)
            self.reason = reason
            self.lost.set()
            self._metrics.mark_inactive()
            self._metrics.errors.labels(kind="lock_lost").inc()

    def _on_terminated(self, conn: Any) -> None:
        if not self._released:  # asyncpg calls this on our own close() too
            self.lose("the session holding the lock was terminated")

    async def _beat(self) -> None:
        while not self.lost.is_set():
            await asyncio.sleep(self._lease_s / 5)
            sent = time.monotonic()
            try:
                held = await self._conn.fetchval(_HELD_SQL, *self._tag, timeout=self._lease_s / 4)
            except Exception as exc:  # whatever it is, the lock is no longer proven
                self.lose(f"the lock's session did not answer a heartbeat: {exc!r}")
                return
            if not held:
                self.lose("the lock is no longer held by its session")
                return
            self._confirmed = sent  # the server saw the session at or after this moment

    async def release(self) -> None:
        """Stop the heartbeat and end the session, which releases the lock."""
        self._released = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        await close_quietly(self._conn)


async def elect(
    connect: Callable[[], Awaitable[asyncpg.Connection]],
    *,
    name: str,
    alias: str,
    lease_s: float,
    stop: asyncio.Event,
    metrics: IndexerMetrics,
) -> Lease | None:
    """Hold the election lock of ``name`` and ``alias``, standing by until it is free.

    Returns the started :class:`Lease`, or ``None`` when ``stop`` was set while standing by.
    A lost connection raises (the caller reconnects and calls again).
    """
    key = election_key(name, alias)
    conn = await connect()
    try:
        await conn.execute(
            "SELECT set_config('idle_session_timeout', $1, false), set_config('application_name', $2, false)",
            f"{int(lease_s * 1000)}ms",
            f"hos-search indexer {name}"[:63],
        )
        started = time.monotonic()
        waited = False
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
            waited = True
            metrics.mark_standby()
            log.info(
                "standby: indexer %s is active elsewhere, waiting (alias %s, lock held by %s)",
                name,
                alias,
                await _holder(conn, key),
            )
            if not await _wait_for_lock(conn, key, stop, timeout=lease_s / 4):
                await close_quietly(conn)
                return None
    except BaseException:
        await close_quietly(conn)
        raise
    waited_s = time.monotonic() - started if waited else 0.0
    lease = Lease(conn, key, lease_s, metrics, waited_s=waited_s)
    lease.start()
    metrics.mark_active()
    if waited:
        log.info("indexer %s: took over as the active indexer of %s after %.1fs on standby", name, alias, waited_s)
    else:
        log.info("indexer %s: active for alias %s (election lock key %d)", name, alias, key)
    return lease


async def _wait_for_lock(conn: asyncpg.Connection, key: int, stop: asyncio.Event, *, timeout: float) -> bool:
    """Ask for the lock every :data:`STANDBY_POLL_S` until it is granted (``True``) or ``stop``
    is set. Each try is also a keepalive: a dead connection raises within ``timeout``."""
    while not await wait_or_stop(stop, STANDBY_POLL_S):
        if await conn.fetchval("SELECT pg_try_advisory_lock($1)", key, timeout=timeout):
            return True
    return False


async def _holder(conn: asyncpg.Connection, key: int) -> str:
    try:
        row = await conn.fetchrow(_HOLDER_SQL, *lock_tag(key), timeout=5.0)
    except (TimeoutError, asyncpg.PostgresError):
        row = None
    if row is None:
        return "a session that just ended"
    return f"backend {row['pid']}, client {row['client'] or 'local'}, {row['application_name']!r}"
