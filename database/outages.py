"""SQL of what an outage leaves behind in the outbox."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from database.pool import AnyConnection

# Rows that died of their retry budget ('max attempts', recovery.notifications) since $1:
# during a Telegram outage every attempt fails, so they died of the outage, not of their
# recipient. Served by ix_pending_notifications_status (status, updated_at).
DEAD_SINCE_SQL = """
SELECT id FROM pending_notifications
 WHERE status = 'dead' AND dead_reason = $2 AND updated_at >= $1
"""


async def dead_since(conn: AnyConnection | asyncpg.Pool, since: datetime, reason: str) -> list[int]:
    """Ids of the rows that became dead with ``reason`` at or after ``since``."""
    return [row["id"] for row in await conn.fetch(DEAD_SINCE_SQL, since, reason)]


# Rows dead with reason $1 ('max attempts: telegram unreachable') in the last $2 seconds.
DEAD_RECENTLY_SQL = """
SELECT id FROM pending_notifications
 WHERE status = 'dead' AND dead_reason = $1
   AND updated_at >= now() - make_interval(secs => $2)
"""


async def dead_recently(
    conn: AnyConnection | asyncpg.Pool, reason: str, max_age_s: float
) -> list[int]:
    """Ids of the rows that became dead with ``reason`` in the last ``max_age_s`` seconds."""
    return [row["id"] for row in await conn.fetch(DEAD_RECENTLY_SQL, reason, float(max_age_s))]
