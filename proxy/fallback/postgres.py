"""Running the fallback's statements: a bounded pool of its own, a concurrency cap, errors by meaning.

:class:`PostgresFallback` answers search, suggestions and the detail pages from the catalog
database with the statements of ``proxy.fallback.sql``, and hands back the same engine-shaped
dicts the engine gateway does, for ``proxy.answers`` to shape. Its lifetime is the app's
(``PostgresFallback.open`` / ``close`` in a ``cleanup_ctx``); opening never touches the
database, so the proxy starts while Postgres is down.

Postgres is protected twice: ``statement_timeout`` (set per connection, so the server itself
cancels a slow query, with asyncpg's own deadline behind it for a server that stops answering),
and a cap on concurrent queries per process — a request waits at most ``queue_wait`` seconds
for a slot, then gets :class:`Overloaded` (503, ``Retry-After``); a request the engine's queue
shed waits only for what is left of its queue budget (``proxy.queueing``), and one that would
wait longer than that behind the requests already waiting, at the measured time a query holds
its slot, gets its 503 at once.

A browse's total and facets come from counts held in memory (``proxy.fallback.facets``), at most
``facets_max_age_ms`` old, and only its page from Postgres; the counts are refreshed by one
statement on a connection of the pool's that no slot may take (the pool has one more then): in a
slot, the refresh made a fourth of four busy clients wait past its queue budget, 503s seen in
``benchmarks.fallback``.

On a read replica (``FALLBACK_DATABASE_URL``) a watcher measures, every
:data:`LAG_CHECK_INTERVAL_S`, how far replay is behind what the replica received; past
``max_lag_ms``, or while the replica does not answer, every call is refused at once (503,
``Retry-After``) rather than serving an old catalog or waiting on a dead server. Every
connection sets ``default_transaction_read_only``: the fallback cannot write even by mistake.

Never: wait longer than that for a slot, open more than ``pool_size`` connections, write to
the database, or let a database error's text (or the database URL) into an error it raises —
every database failure is a :class:`BackendUnavailable` with a message of its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any, Final

import asyncpg

from proxy.errors import BackendUnavailable, Overloaded
from proxy.fallback import sql
from proxy.fallback.facets import HeldFacets
from proxy.fallback.sql import Statement
from proxy.params import SearchRequest, SuggestRequest
from proxy.queueing import ServiceTime, already_waited, having_waited
from proxy.tasks import cancel_and_wait
from proxy.taxonomy import match_taxonomy

log = logging.getLogger("hos_search.proxy.fallback")

APPLICATION_NAME: Final = "hos-search-fallback"
CONNECT_TIMEOUT_S: Final = 2.0
# asyncpg's deadline is only the backstop for a server that stops answering altogether:
# statement_timeout should fire first, and cancels the query on the server too.
_CLIENT_DEADLINE_MARGIN_S: Final = 1.0
_CLOSE_TIMEOUT_S: Final = 5.0
LAG_CHECK_INTERVAL_S: Final = 0.25

# How far a replica's replay is behind its primary, in ms: 0 on a primary, and 0 when it has
# replayed everything it received while a WAL receiver runs (an idle primary is not lag).
# Otherwise the age of the last replayed transaction — or, before it replayed any since it started
# (the timestamp is NULL then, seen on a fresh pg_basebackup copy), the time since it started. A
# replica cut off from its primary has replayed all it received, and read 0 while the primary
# went on committing (session 8's leftover): without a WAL receiver (pg_stat_wal_receiver has a row
# only while one runs; its pid is shown to any role) nothing says it is current, so it ages.
LAG_SQL: Final = """
SELECT CASE
  WHEN NOT pg_is_in_recovery() THEN 0
  WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()
       AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE pid IS NOT NULL) THEN 0
  ELSE extract(epoch FROM clock_timestamp()
               - coalesce(pg_last_xact_replay_timestamp(), pg_postmaster_start_time())) * 1000
END::float8
"""

# Every way the database can fail a query: its errors (a cancelled statement included), a
# broken or refused connection, a connection or query deadline.
_DATABASE_ERRORS: Final = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,
)


class PostgresFallback:
    """The Postgres search backend of one proxy process; ``in_flight`` of ``capacity`` slots busy."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        capacity: int,
        queue_wait: float,
        max_lag_ms: int = 0,
        facets_max_age_ms: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._slots = asyncio.Semaphore(capacity)
        self._queue_wait = queue_wait
        self._max_lag_ms = max_lag_ms
        self.capacity = capacity
        self._clock = clock
        self.service = ServiceTime()
        self.in_flight = 0
        self.waiting = 0
        # Why every call is refused now (the replica lags, or does not answer); None: serve.
        self.refusal: str | None = None
        self._watcher: asyncio.Task[None] | None = None
        # Browse counts held in memory; None: every browse counts in its own statement.
        self.facets = HeldFacets(self._facet_rows, facets_max_age_ms / 1000, clock) if facets_max_age_ms > 0 else None

    @classmethod
    async def open(
        cls,
        database_url: str,
        *,
        pool_size: int,
        statement_timeout_ms: int,
        max_concurrency: int,
        queue_wait: float,
        replica_max_lag_ms: int = 0,
        facets_max_age_ms: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> PostgresFallback:
        """A fallback with a pool of at most ``pool_size`` connections, none opened yet.

        A slot is a connection: at most ``min(max_concurrency, pool_size)`` queries run at
        once, so a request holding a slot never queues again inside the pool.
        ``replica_max_lag_ms`` > 0: ``database_url`` is a replica, watched on a connection of
        its own, refused while its replay lags more than that or it does not answer.
        ``facets_max_age_ms`` > 0: browses' totals and facets come from counts held at most
        that long (0: every browse counts in its own statement).
        """
        if max_concurrency < 1 or pool_size < 1 or statement_timeout_ms < 1 or queue_wait < 0:
            raise ValueError("the fallback needs a pool, a slot, a statement timeout and a non-negative queue wait")
        settings = {
            "application_name": APPLICATION_NAME,
            "statement_timeout": str(statement_timeout_ms),
            "default_transaction_read_only": "on",
            # One statement text serves "harry" (a fifth of the catalog) and "grogu" (a few
            # rows): plan each with its own values, never with a generic plan.
            "plan_cache_mode": "force_custom_plan",
            # Compiling would cost more than these short queries take.
            "jit": "off",
            **sql.SESSION_SETTINGS,
        }
        pool = await asyncpg.create_pool(
            database_url,
            min_size=0,
            # The held facets' refresh has a connection of its own (one refresh at a time).
            max_size=pool_size + 1 if facets_max_age_ms > 0 else pool_size,
            timeout=CONNECT_TIMEOUT_S,
            command_timeout=statement_timeout_ms / 1000 + _CLIENT_DEADLINE_MARGIN_S,
            server_settings=settings,
        )
        fallback = cls(
            pool,
            capacity=min(max_concurrency, pool_size),
            queue_wait=queue_wait,
            max_lag_ms=replica_max_lag_ms,
            facets_max_age_ms=facets_max_age_ms,
            clock=clock,
        )
        if replica_max_lag_ms > 0:
            fallback._watcher = asyncio.ensure_future(fallback._watch_replica(database_url, settings))
        return fallback

    async def ready(self) -> tuple[bool, str]:
        """For ``/readyz``: whether the fallback's database answers and (a replica) is not too far behind."""
        async with self._pool.acquire(timeout=CONNECT_TIMEOUT_S) as conn:
            lag_ms = float(await conn.fetchval(LAG_SQL))
        if self._max_lag_ms and lag_ms > self._max_lag_ms:
            return False, f"replica {lag_ms / 1000:.1f} s behind"
        return True, "ok"

    async def _watch_replica(self, database_url: str, settings: Mapping[str, str]) -> None:
        """Keep :attr:`refusal` current: measure the replica's lag every LAG_CHECK_INTERVAL_S."""
        conn: asyncpg.Connection | None = None
        try:
            while True:
                try:
                    if conn is None or conn.is_closed():
                        conn = await asyncpg.connect(
                            database_url, timeout=CONNECT_TIMEOUT_S, server_settings=dict(settings)
                        )
                    lag_ms = float(await conn.fetchval(LAG_SQL, timeout=CONNECT_TIMEOUT_S))
                except _DATABASE_ERRORS as exc:
                    if self.refusal is None:
                        log.warning("fallback replica not answering (%s): refusing until it does", type(exc).__name__)
                    self.refusal = "The catalog replica is not available."
                    if conn is not None:
                        conn.terminate()
                        conn = None
                else:
                    lagging = lag_ms > self._max_lag_ms
                    if lagging and self.refusal is None:
                        log.warning("fallback replica %.1f s behind: refusing until it catches up", lag_ms / 1000)
                    self.refusal = "The catalog replica is behind; please retry shortly." if lagging else None
                await asyncio.sleep(LAG_CHECK_INTERVAL_S)
        finally:
            if conn is not None:
                conn.terminate()

    async def close(self) -> None:
        if self._watcher is not None:
            await cancel_and_wait(self._watcher)
        if self.facets is not None:
            await self.facets.close()
        # A close that cannot finish in time terminates the pool's connections instead.
        with suppress(TimeoutError):
            await asyncio.wait_for(self._pool.close(), _CLOSE_TIMEOUT_S)

    def would_shed(self, waited: float = 0.0) -> bool:
        """Whether a call from a request that has already queued ``waited`` seconds would get its
        503 at once: every slot busy, and waiting would end in that 503 anyway (its budget spent,
        or the queue ahead of it longer than what is left). Reads no clock, never waits."""
        wait = self._queue_wait - waited
        return self._slots.locked() and (wait <= 0 or self.service.expected_wait(self.waiting, self.capacity) > wait)

    async def _take_slot(self) -> None:
        # What is left of this request's queue budget (proxy.queueing): a request the engine's
        # queue shed has spent some of it already.
        waited = already_waited()
        if self.would_shed(waited):
            raise Overloaded()  # at once: waiting would end in this 503 anyway
        wait = self._queue_wait - waited
        self.waiting += 1
        try:
            async with asyncio.timeout(max(0.0, wait)):
                await self._slots.acquire()
        except TimeoutError:
            raise Overloaded() from None
        finally:
            self.waiting -= 1
        self.in_flight += 1

    def _give_slot(self) -> None:
        self.in_flight -= 1
        self._slots.release()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection inside a slot; database failures come out as BackendUnavailable."""
        if self.refusal is not None:
            raise BackendUnavailable(self.refusal)
        await self._take_slot()
        started = self._clock()
        try:
            async with self._pooled() as conn:
                yield conn
        finally:
            self.service.observe(self._clock() - started)
            self._give_slot()

    @asynccontextmanager
    async def _pooled(self) -> AsyncIterator[asyncpg.Connection]:
        try:
            # The acquire timeout also bounds the release, which resets the connection.
            async with self._pool.acquire(timeout=CONNECT_TIMEOUT_S) as conn:
                yield conn
        except (asyncpg.QueryCanceledError, TimeoutError) as exc:
            log.warning("fallback query timed out: %s", type(exc).__name__)
            raise BackendUnavailable("The catalog database did not answer in time.") from exc
        except _DATABASE_ERRORS as exc:
            log.warning("fallback query failed: %s", type(exc).__name__)
            raise BackendUnavailable("The catalog database is not available.") from exc

    async def search(self, req: SearchRequest) -> tuple[dict[str, Any], bool]:
        """The engine-shaped answer to ``req``, and whether the typo strategy found it (``relaxed``)."""
        if self.facets is None or not sql.counts_held(req):
            return await self._counted(req)
        # Counts first, outside a slot: a browse waiting for a refresh holds none meanwhile.
        waited = already_waited()
        if self.would_shed(waited):
            raise Overloaded()  # at once: no slot would read its page, whatever the counts
        asked = self._clock()
        held = await self.facets.counts(within=self._queue_wait - waited)
        # The refresh waited for was queueing too: it comes out of the budget for a slot.
        with having_waited(waited + self._clock() - asked):
            if held is None:
                return await self._counted(req)
            page = sql.browse_page_strategy(req)
            async with self._connection() as conn:
                started = time.perf_counter()
                row = await _fetchrow(conn, page.statement)
                took = _ms_since(started)
        return sql.search_response(row, page, took, held.counts(req)), False

    async def _counted(self, req: SearchRequest) -> tuple[dict[str, Any], bool]:
        """The search in its own statement: its page, total and facets (and the typo strategy's
        when the words as typed found nothing)."""
        strategy = sql.search_strategy(req)
        if strategy is None:
            return sql.search_response(None, None), False
        async with self._connection() as conn:
            started = time.perf_counter()
            row = await _fetchrow(conn, strategy.statement)
            if row is not None and not row["total"] and (fixes := sql.corrections_statement(req)) is not None:
                typo = sql.typo_strategy(req, await _fetch(conn, fixes))
                relaxed = None if typo is None else await _fetchrow(conn, typo.statement)
                if typo is not None and relaxed is not None and relaxed["total"]:
                    row, strategy = relaxed, typo
            took = _ms_since(started)
        return sql.search_response(row, strategy, took), strategy.typo

    async def _facet_rows(self) -> list[Mapping[str, Any]]:
        """Every active product's facet values and price, grouped (``HeldFacets``' loader), on
        the pool's connection beyond the slots' (single flight: never more than one)."""
        if self.refusal is not None:
            raise BackendUnavailable(self.refusal)
        async with self._pooled() as conn:
            return await _fetch(conn, Statement(sql.FACET_COUNTS_SQL, ()))

    async def suggest(self, req: SuggestRequest) -> dict[str, Any]:
        """Engine-shaped suggestions: product names, and fandoms and categories with counts."""
        async with self._connection() as conn:
            started = time.perf_counter()
            row = await _fetchrow(conn, sql.suggest_statement(req)) or {}
            matches = match_taxonomy(req.q, row)
            counts = await _fetch(conn, sql.taxonomy_count_statement(matches)) if matches else []
            took = _ms_since(started)
        return sql.suggest_response(req, row, matches, counts, took)

    async def product(self, product_id: int) -> dict[str, Any]:
        """The engine-shaped answer for one product's page: its document if it is active."""
        return await self._one_row(sql.product_statement(product_id), sql.product_response)

    async def seller(self, seller_id: int) -> dict[str, Any]:
        """The engine-shaped answer for a seller's page: active product count and top values."""
        return await self._one_row(sql.seller_statement(seller_id), sql.seller_response)

    async def _one_row(
        self, statement: Statement, respond: Callable[[Mapping[str, Any] | None, int], dict[str, Any]]
    ) -> dict[str, Any]:
        async with self._connection() as conn:
            started = time.perf_counter()
            row = await _fetchrow(conn, statement)
            took = _ms_since(started)
        return respond(row, took)


async def _fetchrow(conn: asyncpg.Connection, statement: Statement) -> Mapping[str, Any] | None:
    row: Mapping[str, Any] | None = await conn.fetchrow(statement.sql, *statement.args)
    return row


async def _fetch(conn: asyncpg.Connection, statement: Statement) -> list[Mapping[str, Any]]:
    rows: list[Mapping[str, Any]] = await conn.fetch(statement.sql, *statement.args)
    return rows


def _ms_since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
