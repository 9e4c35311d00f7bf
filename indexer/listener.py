"""The doorbell: a dedicated Postgres connection LISTENing on channel ``search_outbox``.

NOTIFY is only a wake-up call; the outbox table is the record. A notification sets
:attr:`Listener.doorbell`; the reader then reads the outbox, so a lost or folded notification
costs at most one keepalive interval. asyncpg only notices a silently dead connection at TCP
timeout (minutes), so :meth:`Listener.check` runs a cheap query with a short timeout; a
terminated backend (``pg_terminate_backend``) is noticed at once through the termination
callback. Either way the caller gets :class:`ListenerLost` and reconnects.

Never reads the outbox itself and never shares its connection with queries of the reader: a
pool connection could be handed to someone else while LISTENing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

CHANNEL = "search_outbox"


class ListenerLost(ConnectionError):
    """The LISTEN connection died; reconnect, LISTEN again and re-read from the checkpoint."""


class Listener:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.doorbell = asyncio.Event()
        self._lost = False

    @classmethod
    async def open(cls, connect: Callable[[], Awaitable[asyncpg.Connection]]) -> Listener:
        conn = await connect()
        listener = cls(conn)
        try:
            conn.add_termination_listener(listener._on_terminated)
            await conn.add_listener(CHANNEL, listener._on_notify)
        except BaseException:
            await close_quietly(conn)
            raise
        return listener

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self.doorbell.set()

    def _on_terminated(self, conn: Any) -> None:
        self._lost = True
        self.doorbell.set()  # wake the waiter so it notices now, not at the next keepalive

    async def wait(self, stop: asyncio.Event, timeout: float) -> bool:
        """Wait for the doorbell (``True``), ``stop``, or ``timeout`` (``False``)."""
        rang = asyncio.ensure_future(self.doorbell.wait())
        stopped = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait({rang, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            rang.cancel()
            stopped.cancel()
        if self._lost:
            raise ListenerLost("the LISTEN connection was terminated")
        return rang in done

    async def check(self, timeout: float) -> None:
        """A cheap round trip; raises :class:`ListenerLost` if the connection is dead or stuck."""
        if self._lost or self._conn.is_closed():
            raise ListenerLost("the LISTEN connection is closed")
        try:
            await self._conn.fetchval("SELECT 1", timeout=timeout)
        except (TimeoutError, OSError, asyncpg.InterfaceError, asyncpg.PostgresError) as exc:
            raise ListenerLost(f"the LISTEN connection did not answer a keepalive: {exc!r}") from exc

    async def close(self) -> None:
        await close_quietly(self._conn)


async def close_quietly(conn: asyncpg.Connection) -> None:
    """Close ``conn`` without waiting on a dead server: terminate if a polite close fails."""
    try:
        await asyncio.wait_for(conn.close(), 2.0)
    except Exception:
        conn.terminate()
