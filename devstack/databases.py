"""Throw-away databases on a Postgres server, for benchmarks and tests.

Each benchmark run and test needs a database of its own beside whatever else the server
holds; this is the one place that names, creates, migrates and drops them. Never touches a
database it did not create.
"""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from catalog.migrate import migrate


def database_url_for(base_url: str, database: str) -> str:
    """``base_url`` pointing at ``database`` instead (same server, user and options)."""
    return urlunsplit(urlsplit(base_url)._replace(path=f"/{database}"))


class ScratchDatabases:
    """Fresh, migrated databases on the server of ``admin_url``; :meth:`drop_all` removes them."""

    def __init__(self, admin_url: str, prefix: str = "bench") -> None:
        self.admin_url = admin_url
        self.prefix = prefix
        self.created: list[str] = []

    async def create(self, label: str = "") -> str:
        """The URL of a new database with the catalog schema applied."""
        name = "_".join(filter(None, (self.prefix, label, uuid.uuid4().hex[:8])))
        admin = await asyncpg.connect(self.admin_url)
        try:
            await admin.execute(f"CREATE DATABASE {name}")
        finally:
            await admin.close()
        self.created.append(name)
        url = database_url_for(self.admin_url, name)
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        return url

    async def fresh(self, label: str = "") -> asyncpg.Connection:
        """A connection to a new migrated database (see :meth:`create`)."""
        return await asyncpg.connect(await self.create(label))

    async def drop_all(self) -> None:
        admin = await asyncpg.connect(self.admin_url)
        try:
            for name in self.created:
                await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()
        self.created.clear()
