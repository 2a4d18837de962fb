"""SQL of update deduplication (``processed_updates``): one instance takes each update id."""

from __future__ import annotations

import asyncpg

from database.pool import AnyConnection

Conn = AnyConnection | asyncpg.Pool

# Take update $1 for instance $2; no row comes back when some instance took it before.
# Asynchronous commit (set_config(..., true) is local to the statement's transaction): the
# webhook does not wait for the WAL flush of a claim. A server crash may forget the last
# claims, and a redelivery of one of those updates is then handled again, as when the claim
# fails (at least once). See "Asynchronous Commit" in the PostgreSQL manual.
CLAIM_SQL = """
INSERT INTO processed_updates (update_id, instance_id)
SELECT $1, $2 WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL
ON CONFLICT (update_id) DO NOTHING
RETURNING update_id
"""

# Take updates $1 (an array of ids) for instance $2 in one statement; returns the ids taken
# (an id some instance took before is not returned). Asynchronous commit as in CLAIM_SQL.
CLAIM_MANY_SQL = """
INSERT INTO processed_updates (update_id, instance_id)
SELECT id, $2 FROM unnest($1::bigint[]) AS id
 WHERE set_config('synchronous_commit', 'off', true) IS NOT NULL
ON CONFLICT (update_id) DO NOTHING
RETURNING update_id
"""

# Retention: ids received more than $1 days ago.
DELETE_OLD_SQL = """
DELETE FROM processed_updates WHERE received_at < now() - make_interval(days => $1)
"""


async def claim(conn: Conn, update_id: int, instance_id: str) -> bool:
    """True when this call took ``update_id`` first, False for a repeated delivery."""
    return await conn.fetchval(CLAIM_SQL, update_id, instance_id) is not None


async def claim_many(conn: Conn, update_ids: list[int], instance_id: str) -> set[int]:
    """The ids of ``update_ids`` (distinct) that this call took first; one statement."""
    rows = await conn.fetch(CLAIM_MANY_SQL, update_ids, instance_id)
    return {row["update_id"] for row in rows}


async def delete_older_than(conn: Conn, days: int) -> int:
    """Forget update ids older than ``days`` days; returns the row count."""
    status = await conn.execute(DELETE_OLD_SQL, days)
    return int(status.split()[-1])
