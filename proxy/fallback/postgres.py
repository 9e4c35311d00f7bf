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
shed already does not wait again (``proxy.queueing``).

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
from proxy.fallback.sql import Statement
from proxy.params import SearchRequest, SuggestRequest
from proxy.queueing import already_waited

log = logging.getLogger("hos_search.proxy.fallback")

APPLICATION_NAME: Final = "hos-search-fallback"
CONNECT_TIMEOUT_S: Final = 2.0
# asyncpg's deadline is only the backstop for a server that stops answering altogether:
# statement_timeout should fire first, and cancels the query on the server too.
_CLIENT_DEADLINE_MARGIN_S: Final = 1.0
_CLOSE_TIMEOUT_S: Final = 5.0

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

    def __init__(self, pool: asyncpg.Pool, *, capacity: int, queue_wait: float) -> None:
        self._pool = pool
        self._slots = asyncio.Semaphore(capacity)
        self._queue_wait = queue_wait
        self.capacity = capacity
        self.in_flight = 0
        self.waiting = 0

    @classmethod
    async def open(
        cls,
        database_url: str,
        *,
        pool_size: int,
        statement_timeout_ms: int,
        max_concurrency: int,
        queue_wait: float,
    ) -> PostgresFallback:
        """A fallback with a pool of at most ``pool_size`` connections, none opened yet.

        A slot is a connection: at most ``min(max_concurrency, pool_size)`` queries run at
        once, so a request holding a slot never queues again inside the pool.
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
            max_size=pool_size,
            timeout=CONNECT_TIMEOUT_S,
            command_timeout=statement_timeout_ms / 1000 + _CLIENT_DEADLINE_MARGIN_S,
            server_settings=settings,
        )
        return cls(pool, capacity=min(max_concurrency, pool_size), queue_wait=queue_wait)

    async def close(self) -> None:
        # A close that cannot finish in time terminates the pool's connections instead.
        with suppress(TimeoutError):
            await asyncio.wait_for(self._pool.close(), _CLOSE_TIMEOUT_S)

    async def _take_slot(self) -> None:
        if already_waited() and self._slots.locked():
            raise Overloaded()  # shed by the engine's queue already: no second wait
        self.waiting += 1
        try:
            async with asyncio.timeout(self._queue_wait):
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
        await self._take_slot()
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
        finally:
            self._give_slot()

    async def search(self, req: SearchRequest) -> tuple[dict[str, Any], bool]:
        """The engine-shaped answer to ``req``, and whether the typo strategy found it (``relaxed``)."""
        strategy = sql.search_strategy(req)
        if strategy is None:
            return sql.search_response(None, None), False
        async with self._connection() as conn:
            started = time.perf_counter()
            row = await _fetchrow(conn, strategy.statement)
            if row is not None and not row["total"] and (typo := sql.search_strategy(req, typo=True)) is not None:
                relaxed = await _fetchrow(conn, typo.statement)
                if relaxed is not None and relaxed["total"]:
                    row, strategy = relaxed, typo
            took = _ms_since(started)
        return sql.search_response(row, strategy, took), strategy.typo

    async def suggest(self, req: SuggestRequest) -> dict[str, Any]:
        """Engine-shaped suggestions: product names, and fandoms and categories with counts."""
        async with self._connection() as conn:
            started = time.perf_counter()
            row = await _fetchrow(conn, sql.suggest_statement(req)) or {}
            matches = sql.match_taxonomy(req, row)
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
