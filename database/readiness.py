"""SQL of the readiness probe: is the database reachable, at which alembic revision."""

from __future__ import annotations

from typing import cast

import asyncpg

# Whether alembic has created its bookkeeping table yet (NULL before the first migration).
HAS_VERSION_TABLE_SQL = "SELECT to_regclass('alembic_version') IS NOT NULL"

# alembic keeps the applied revision in alembic_version (one row).
REVISION_SQL = "SELECT version_num FROM alembic_version LIMIT 1"


async def schema_revision(pool: asyncpg.Pool, timeout_s: float) -> str | None:
    """The alembic revision the database is at (None when unmigrated).

    Goes through the pool, so it also proves that the database answers (it replaces a
    ``SELECT 1``).

    Raises:
        OSError, asyncpg.PostgresError, TimeoutError: the database did not answer within
        ``timeout_s`` seconds.
    """
    async with pool.acquire(timeout=timeout_s) as conn:
        if not await conn.fetchval(HAS_VERSION_TABLE_SQL, timeout=timeout_s):
            return None
        return cast(str | None, await conn.fetchval(REVISION_SQL, timeout=timeout_s))


async def ping(pool: asyncpg.Pool, timeout_s: float) -> None:
    """One ``SELECT 1`` through the pool: the database answers.

    Raises:
        OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError: it did not
        within ``timeout_s`` seconds (for the pool and for the statement each).
    """
    async with pool.acquire(timeout=timeout_s) as conn:
        await conn.fetchval("SELECT 1", timeout=timeout_s)
