"""``python -m bot seed-demo``: load the demo data set so the admin menu has something to
show (users of each role, requests of which several are stuck, a negative balance, a
drifted balance, failed notifications)."""

from __future__ import annotations

import logging

from bot.app import resolve_database_url
from bot.settings import Settings
from database import demo_data
from database.pool import create_pool

log = logging.getLogger(__name__)


async def seed_demo(settings: Settings) -> dict[str, int]:
    """Load the demo data once; returns what was inserted (empty when already there)."""
    url = await resolve_database_url(settings)
    pool = await create_pool(url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn, conn.transaction():
            if await demo_data.already_seeded(conn):
                return {}
            return await demo_data.seed(conn, list(settings.admin_ids))
    finally:
        await pool.close()
