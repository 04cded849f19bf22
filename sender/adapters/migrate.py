"""Versioned SQL migrations (`migrations/NNN_name.sql`), applied once each, under a lock."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, TypeAlias

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy[asyncpg.Record]

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same for every pod.
_MIGRATION_LOCK_KEY = 0x5E2D_E400
# Building an index on a big `contacts` takes minutes, and other pods wait on the lock
# meanwhile: the pool's 10 s command timeout (meant for the hot path) would roll the
# migration back on every start.
MIGRATION_TIMEOUT_S = 3600.0


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    """Every migration shipped with the package, in version order."""
    found = []
    for entry in resources.files("sender.adapters.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version, _, rest = entry.name.partition("_")
            found.append(Migration(int(version), rest.removesuffix(".sql"), entry.read_text()))
    return sorted(found, key=lambda migration: migration.version)


async def migrate(conn: Connection) -> list[int]:
    """Apply the migrations this database lacks; return the versions applied."""
    applied_now: list[int] = []
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_KEY, timeout=MIGRATION_TIMEOUT_S
        )
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in available_migrations():
            if migration.version in done:
                continue
            await conn.execute(migration.sql, timeout=MIGRATION_TIMEOUT_S)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            applied_now.append(migration.version)
            log.info("migration applied", extra={"version": migration.version})
    return applied_now
