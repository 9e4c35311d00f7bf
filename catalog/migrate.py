"""Applying the catalog's SQL migrations, in order, once each, from any number of processes.

Migrations are the ``NNNN_name.sql`` files beside this module. Each runs in its own
transaction and is recorded in ``schema_migrations`` with a checksum; a recorded migration
whose file has since changed is an error, not something to re-run. A session-level advisory
lock makes concurrent ``hos-search migrate`` runs take turns.

A migration may add a constraint ``NOT VALID`` (it holds for new rows at once, and the migration
cannot fail on old ones); :func:`validate_constraints` then checks each such constraint against
the rows already there, validates it when none violates it, and otherwise names the rows that
do — so the operator fixes those rows instead of facing a migration that fails blindly.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import asyncpg

from catalog.errors import CatalogError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# How many violating rows a report names per constraint (the count is always whole).
VIOLATIONS_NAMED: Final = 20
# An arbitrary constant naming "the catalog migration lock" for pg_advisory_lock.
_LOCK_KEY = 0x686F735F6D6967  # "hos_mig"


class MigrationError(CatalogError):
    """A migration failed or the recorded history disagrees with the files."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        version, _, name = path.stem.partition("_")
        if not version.isdigit():
            raise MigrationError(f"migration file {path.name} does not start with a number")
        migrations.append(Migration(version, name, path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a number in {directory}")
    return migrations


async def migrate(conn: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[str]:
    """Apply every migration not yet recorded; return the versions applied now."""
    migrations = load_migrations() if migrations is None else migrations
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    text PRIMARY KEY,
                   name       text NOT NULL,
                   checksum   text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        recorded = {
            r["version"]: r["checksum"] for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        for migration in migrations:
            if migration.version in recorded:
                if recorded[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version}_{migration.name} was changed after it "
                        "was applied; add a new migration instead of editing an applied one"
                    )
                continue
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"migration {migration.version}_{migration.name} failed: {exc}") from exc
            applied_now.append(migration.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now


@dataclass(frozen=True)
class ConstraintCheck:
    """One ``NOT VALID`` constraint checked: validated now, or the rows that violate it."""

    table: str
    constraint: str
    violations: int  # 0: validated now
    row_ids: tuple[int, ...]  # the first VIOLATIONS_NAMED of them, by id

    def __str__(self) -> str:
        if not self.violations:
            return f"{self.table}.{self.constraint}: validated"
        named = ", ".join(map(str, self.row_ids)) + (", ..." if self.violations > len(self.row_ids) else "")
        return (
            f"{self.table}.{self.constraint}: {self.violations} existing row(s) violate it (id {named}); "
            "new rows are held to it already; fix these and run migrate again to validate it"
        )


_NOT_VALID_SQL = """
SELECT c.conrelid::regclass::text AS tab, c.conname AS name, pg_get_expr(c.conbin, c.conrelid) AS expr
  FROM pg_constraint c
  JOIN pg_namespace n ON n.oid = c.connamespace
 WHERE c.contype = 'c' AND NOT c.convalidated AND n.nspname = current_schema()
 ORDER BY 1, 2
"""


async def validate_constraints(conn: asyncpg.Connection) -> list[ConstraintCheck]:
    """Check every ``NOT VALID`` check constraint; validate those no row violates."""
    checks: list[ConstraintCheck] = []
    for constraint in await conn.fetch(_NOT_VALID_SQL):
        table, name, expr = constraint["tab"], constraint["name"], constraint["expr"]
        # A CHECK passes when its expression is NULL, so only a false one is a violation.
        where = f"NOT coalesce(({expr}), true)"
        violations = int(await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {where}"))
        if violations:
            ids = await conn.fetch(f"SELECT id FROM {table} WHERE {where} ORDER BY id LIMIT {VIOLATIONS_NAMED}")
            checks.append(ConstraintCheck(table, name, violations, tuple(int(r["id"]) for r in ids)))
        else:
            await conn.execute(f'ALTER TABLE {table} VALIDATE CONSTRAINT "{name}"')
            checks.append(ConstraintCheck(table, name, 0, ()))
    return checks
