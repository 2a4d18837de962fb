"""SQL of the instance heartbeat (``bot_instances``): which bot processes are alive."""

from __future__ import annotations

import asyncpg

from database.pool import AnyConnection

Conn = AnyConnection | asyncpg.Pool

# Instance $1 (mode $2) is alive now; $3: seconds after which a silent row counts as dead.
# Rows of dead instances are removed on the way; returns the live instances, this one
# included.
BEAT_SQL = """
WITH beat AS (
    INSERT INTO bot_instances (instance_id, mode) VALUES ($1, $2)
    ON CONFLICT (instance_id) DO UPDATE SET last_seen_at = now(), mode = EXCLUDED.mode
    RETURNING instance_id
), dead AS (
    DELETE FROM bot_instances
     WHERE last_seen_at < now() - make_interval(secs => $3) AND instance_id <> $1
)
SELECT 1 + count(*) FROM bot_instances
 WHERE last_seen_at >= now() - make_interval(secs => $3) AND instance_id <> $1
"""

# A graceful stop: the instance is gone at once (not after its rows go stale).
LEAVE_SQL = "DELETE FROM bot_instances WHERE instance_id = $1"

# Live instances, oldest first (the dashboard and the tests read them).
LIVE_SQL = """
SELECT instance_id, mode, started_at, last_seen_at FROM bot_instances
 WHERE last_seen_at >= now() - make_interval(secs => $1)
 ORDER BY started_at, instance_id
"""


async def beat(conn: Conn, instance_id: str, mode: str, stale_after_s: float) -> int:
    """Record that ``instance_id`` is alive; returns how many instances are (at least 1)."""
    return int(await conn.fetchval(BEAT_SQL, instance_id, mode, float(stale_after_s)))


async def leave(conn: Conn, instance_id: str) -> None:
    """Remove ``instance_id``'s row (graceful stop)."""
    await conn.execute(LEAVE_SQL, instance_id)


async def live(conn: Conn, stale_after_s: float) -> list[asyncpg.Record]:
    """Instances seen within ``stale_after_s`` seconds: id, mode, started_at, last_seen_at."""
    return await conn.fetch(LIVE_SQL, float(stale_after_s))
