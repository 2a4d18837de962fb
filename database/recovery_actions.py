"""SQL the admin recovery actions read: a request's state path (for a reset) and the users
a request can be reassigned to (paginated)."""

from __future__ import annotations

import asyncpg

from database.pool import AnyConnection

# Every history row of some requests, oldest first (a reset replays it as a stack).
STATE_PATHS_SQL = """
SELECT request_id, id, from_state, to_state, to_assignee_id, kind, created_at
  FROM workflow_transitions WHERE request_id = ANY($1::bigint[]) ORDER BY request_id, id
"""

# Active, reachable users of a role with how many active requests each holds now;
# $2: a user to leave out (the current assignee) or NULL.
CANDIDATES_SQL = """
SELECT u.id, u.full_name, u.telegram_id,
       (SELECT count(*) FROM service_requests r
         WHERE r.assignee_id = u.id AND r.status = 'active') AS active_requests,
       count(*) OVER () AS total
  FROM users u
 WHERE u.role = $1 AND u.is_active AND u.blocked_bot_at IS NULL
   AND u.id IS DISTINCT FROM $2
 ORDER BY u.full_name, u.id
 LIMIT $3 OFFSET $4
"""


async def state_paths(
    conn: AnyConnection | asyncpg.Pool, request_ids: list[int]
) -> dict[int, list[asyncpg.Record]]:
    """Each request's transitions oldest first (``id``, ``from_state``, ``to_state``,
    ``to_assignee_id``, ``kind``, ``created_at``); requests without history are absent."""
    paths: dict[int, list[asyncpg.Record]] = {}
    for row in await conn.fetch(STATE_PATHS_SQL, request_ids):
        paths.setdefault(row["request_id"], []).append(row)
    return paths


async def candidates(
    conn: AnyConnection | asyncpg.Pool,
    role: str,
    *,
    exclude_user_id: int | None,
    limit: int,
    offset: int,
) -> tuple[list[asyncpg.Record], int]:
    """A page of users a request owned by ``role`` can be given to (active, reachable, not
    ``exclude_user_id``), by name; each with ``active_requests``. Returns (page, total)."""
    rows = await conn.fetch(CANDIDATES_SQL, role, exclude_user_id, limit, offset)
    if rows:
        return rows, rows[0]["total"]
    if offset == 0:
        return [], 0
    total = await conn.fetchval(
        "SELECT count(*) FROM users WHERE role = $1 AND is_active AND blocked_bot_at IS NULL "
        "AND id IS DISTINCT FROM $2",
        role,
        exclude_user_id,
    )
    return [], total


async def positions(
    conn: AnyConnection | asyncpg.Pool, request_ids: list[int]
) -> list[asyncpg.Record]:
    """``id``, ``current_state``, ``state_entered_at`` of each request (for batch previews)."""
    return await conn.fetch(
        "SELECT id, current_state, state_entered_at FROM service_requests "
        "WHERE id = ANY($1::bigint[])",
        request_ids,
    )
