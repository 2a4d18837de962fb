"""SQL of ``workflow_recovery_log``: every admin recovery action, applied or refused."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

INSERT_SQL = """
INSERT INTO workflow_recovery_log
    (request_id, action, admin_id, admin_telegram_id, reason, before_state, after_state,
     success, error_message, batch_id)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, $10)
RETURNING id
"""


async def insert(
    conn: asyncpg.Connection | asyncpg.Pool,
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
    return await conn.fetchval(
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
    )


async def recent(
    conn: asyncpg.Connection | asyncpg.Pool, *, limit: int = 10, offset: int = 0
) -> list[asyncpg.Record]:
    """The latest recovery actions with the admin's name, newest first."""
    return await conn.fetch(
        """
        SELECT l.*, u.full_name AS admin_name
          FROM workflow_recovery_log l LEFT JOIN users u ON u.id = l.admin_id
         ORDER BY l.created_at DESC, l.id DESC LIMIT $1 OFFSET $2
        """,
        limit,
        offset,
    )
