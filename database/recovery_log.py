"""SQL of ``workflow_recovery_log``: every admin recovery action, applied or refused."""

from __future__ import annotations

import uuid
from typing import Any, cast

import asyncpg

from database.pool import AnyConnection

INSERT_SQL = """
INSERT INTO workflow_recovery_log
    (request_id, action, admin_id, admin_telegram_id, reason, before_state, after_state,
     success, error_message, batch_id)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, $10)
RETURNING id
"""

# Newest first, with the admin's name; $1: one request or NULL for all (served by
# ix_recovery_log_request / ix_recovery_log_created).
RECENT_SQL = """
SELECT l.*, u.full_name AS admin_name, count(*) OVER () AS total
  FROM workflow_recovery_log l LEFT JOIN users u ON u.id = l.admin_id
 WHERE ($1::bigint IS NULL OR l.request_id = $1)
 ORDER BY l.created_at DESC, l.id DESC LIMIT $2 OFFSET $3
"""


async def insert(
    conn: AnyConnection | asyncpg.Pool,
    *,
    request_id: int | None,
    action: str,
    admin_id: int | None,
    admin_telegram_id: int | None,
    reason: str | None,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    success: bool,
    error_message: str | None = None,
    batch_id: uuid.UUID | None = None,
) -> int:
    """Append one audit row; returns its id."""
    return cast(
        int,
        await conn.fetchval(
            INSERT_SQL,
            request_id,
            action,
            admin_id,
            admin_telegram_id,
            reason,
            before,
            after,
            success,
            error_message,
            batch_id,
        ),
    )


async def recent(
    conn: AnyConnection | asyncpg.Pool,
    *,
    limit: int = 10,
    offset: int = 0,
    request_id: int | None = None,
) -> list[asyncpg.Record]:
    """The latest recovery actions (of one request, or all) with the admin's name, newest
    first; each row also has ``total`` (all matching rows)."""
    return await conn.fetch(RECENT_SQL, request_id, limit, offset)
