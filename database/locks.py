"""PostgreSQL session advisory locks: one holder across every bot instance.

A session-level lock is released when the holder unlocks it or when its connection ends, so
an instance that dies mid-job frees the lock. The lock lives on a session connection
(``database.pool.session_connection``): if the unlock is cut short (cancelled, connection
trouble), the pool's full reset on release (``pg_advisory_unlock_all``) still frees it, and
no other user of the connection inherits it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from database.pool import session_connection


@asynccontextmanager
async def try_advisory_lock(pool: asyncpg.Pool, name: str) -> AsyncIterator[bool]:
    """Yield True while this process holds the lock named ``name`` (hashed with
    ``hashtext``), False when another session holds it. Never waits."""
    async with session_connection(pool) as conn:
        acquired = await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", name)
        try:
            yield bool(acquired)
        finally:
            if acquired:
                await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", name)


@asynccontextmanager
async def advisory_lock(pool: asyncpg.Pool, name: str) -> AsyncIterator[None]:
    """Hold the lock named ``name`` (hashed with ``hashtext``) for the block, waiting for
    the current holder first."""
    async with session_connection(pool) as conn:
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", name)
        try:
            yield
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", name)
