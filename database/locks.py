"""PostgreSQL advisory locks: one holder across every bot instance.

A session-level lock taken with ``pg_try_advisory_lock`` is released when the holder
unlocks it or when its connection ends, so an instance that dies mid-job frees the lock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg


@asynccontextmanager
async def try_advisory_lock(pool: asyncpg.Pool, name: str) -> AsyncIterator[bool]:
    """Yield True while this process holds the lock named ``name`` (hashed with
    ``hashtext``), False when another session holds it. Never waits."""
    async with pool.acquire() as conn:
        acquired = await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", name)
        try:
            yield bool(acquired)
        finally:
            if acquired:
                await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", name)
