"""SQL of ``admin_audit_log`` (every admin action of the dashboard) and of the recovery
history screen, which also shows ``workflow_recovery_log`` (the workflow actions)."""

from __future__ import annotations

from typing import Any, cast

import asyncpg

from database.pool import AnyConnection

Db = AnyConnection | asyncpg.Pool

INSERT_SQL = """
INSERT INTO admin_audit_log
    (admin_id, admin_telegram_id, action, target_type, target_id, before_value, after_value,
     reason, success, error_message)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, $10)
RETURNING id
"""

# The newest $1 entries after skipping $2, from both logs, with the admin's name. Each branch
# reads at most $1 + $2 rows through its created_at index before the merge.
HISTORY_SQL = """
SELECT h.*, u.full_name AS admin_name
  FROM (
    (SELECT 'workflow' AS source, l.id, l.created_at, l.admin_id, l.admin_telegram_id,
            l.action, 'request' AS target_type, l.request_id::text AS target_id,
            l.success, l.reason, l.error_message
       FROM workflow_recovery_log l
      ORDER BY l.created_at DESC, l.id DESC LIMIT $1::int + $2::int)
    UNION ALL
    (SELECT 'dashboard', a.id, a.created_at, a.admin_id, a.admin_telegram_id,
            a.action, a.target_type, a.target_id, a.success, a.reason, a.error_message
       FROM admin_audit_log a
      ORDER BY a.created_at DESC, a.id DESC LIMIT $1::int + $2::int)
  ) h
  LEFT JOIN users u ON u.id = h.admin_id
 ORDER BY h.created_at DESC, h.source, h.id DESC
 LIMIT $1 OFFSET $2
"""

HISTORY_COUNT_SQL = """
SELECT (SELECT count(*) FROM workflow_recovery_log) + (SELECT count(*) FROM admin_audit_log)
"""


async def insert(
    conn: Db,
    *,
    admin_id: int | None,
    admin_telegram_id: int | None,
    action: str,
    target_type: str | None,
    target_id: str | None,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    reason: str | None,
    success: bool,
    error_message: str | None,
) -> int:
    """Append one audit row; returns its id."""
    return cast(
        int,
        await conn.fetchval(
            INSERT_SQL,
            admin_id,
            admin_telegram_id,
            action,
            target_type,
            target_id,
            before,
            after,
            reason,
            success,
            error_message,
        ),
    )


async def history(conn: Db, limit: int, offset: int) -> list[asyncpg.Record]:
    """A page of admin actions from both logs, newest first."""
    return await conn.fetch(HISTORY_SQL, limit, offset)


async def history_count(conn: Db) -> int:
    """Entries in both logs."""
    return cast(int, await conn.fetchval(HISTORY_COUNT_SQL))
