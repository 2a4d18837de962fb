"""SQL of what the admin menu does with the outbox: counts, the failing list, one row,
retry now, discard, and the retention cleanup. The sender's SQL is ``database/notifications.py``."""

from __future__ import annotations

import asyncpg

from database.notifications import CHANNEL

Db = asyncpg.Connection | asyncpg.Pool


# --- Admin operations ---------------------------------------------------------------------

STATUS_COUNTS_SQL = "SELECT status, count(*) AS n FROM pending_notifications GROUP BY status"

# Dead and failing rows (statuses $1), the most recently changed first, with the last error.
LIST_SQL = """
SELECT id, chat_id, recipient_id, template_key, status, attempts, last_error, dead_reason,
       next_attempt_at, created_at, updated_at, request_id,
       count(*) OVER () AS total
  FROM pending_notifications
 WHERE status = ANY($1::text[])
 ORDER BY updated_at DESC, id DESC
 LIMIT $2 OFFSET $3
"""

# Retry now: rows $1 (NULL: all) in statuses $2 become due at once; a dead or skipped row is
# re-queued with a fresh attempt budget, a retrying row keeps its count and its waiting
# retry-queue entry becomes due now too.
RETRY_NOW_SQL = """
WITH n AS (
    UPDATE pending_notifications p
       SET status = CASE WHEN p.status = 'retrying' THEN 'retrying' ELSE 'pending' END,
           attempts = CASE WHEN p.status = 'retrying' THEN p.attempts ELSE 0 END,
           dead_reason = NULL, next_attempt_at = now(), updated_at = now()
     WHERE status = ANY($2::text[]) AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))
    RETURNING id
), q AS (
    UPDATE notification_retry_queue SET retry_at = now()
     WHERE notification_id IN (SELECT id FROM n) AND status = 'waiting'
)
SELECT count(*) FROM n
"""

# Discard: the row is given up (kept for the retention period, then cleaned up); a waiting
# retry-queue entry is cancelled. Rows being sent right now cannot be discarded.
DISCARD_SQL = """
WITH n AS (
    UPDATE pending_notifications
       SET status = 'discarded', dead_reason = COALESCE(dead_reason, 'discarded by admin'),
           updated_at = now()
     WHERE id = $1 AND status IN ('pending', 'retrying', 'dead', 'skipped')
    RETURNING id
), q AS (
    UPDATE notification_retry_queue SET status = 'cancelled'
     WHERE notification_id IN (SELECT id FROM n) AND status = 'waiting'
)
SELECT count(*) FROM n
"""

RETRYABLE_BY_ADMIN = ("dead", "retrying", "skipped")


async def status_counts(db: Db) -> dict[str, int]:
    """Rows by status (statuses without rows are absent)."""
    return {row["status"]: row["n"] for row in await db.fetch(STATUS_COUNTS_SQL)}


async def list_by_status(
    db: Db, statuses: tuple[str, ...], *, limit: int, offset: int = 0
) -> tuple[list[asyncpg.Record], int]:
    """One page of rows in ``statuses`` (newest change first) and the total count."""
    rows = await db.fetch(LIST_SQL, list(statuses), limit, offset)
    if rows:
        return rows, int(rows[0]["total"])
    total = await db.fetchval(
        "SELECT count(*) FROM pending_notifications WHERE status = ANY($1::text[])",
        list(statuses),
    )
    return rows, int(total)


async def retry_now(
    db: Db, row_ids: list[int] | None, statuses: tuple[str, ...] = RETRYABLE_BY_ADMIN
) -> int:
    """Make rows due now (``row_ids`` None: every row in ``statuses``) and wake the senders
    (NOTIFY); returns how many rows."""
    count = int(await db.fetchval(RETRY_NOW_SQL, row_ids, list(statuses)))
    if count:
        await wake_senders(db)
    return count


async def wake_senders(db: Db) -> None:
    """NOTIFY the senders listening on ``CHANNEL`` (delivered at commit)."""
    await db.execute("SELECT pg_notify($1, '')", CHANNEL)


async def discard(db: Db, row_id: int) -> bool:
    """Give up on one row; False when it does not exist, is final or is being sent."""
    return bool(await db.fetchval(DISCARD_SQL, row_id))


# A notification about a request's state ("state" in its params) next to the request's
# state now: request_state / request_status are NULL when the request is gone.
WITH_REQUEST_SQL = """
SELECT n.id, n.request_id, n.params ->> 'state' AS said_state,
       r.current_state AS request_state, r.status AS request_status
  FROM pending_notifications n
  LEFT JOIN service_requests r ON r.id = n.request_id
 WHERE n.id = $1 AND n.request_id IS NOT NULL AND n.params ? 'state'
"""

# How many rows in statuses $1 speak of a request state that is no longer the request's.
MOVED_COUNT_SQL = """
SELECT count(*)
  FROM pending_notifications n
  LEFT JOIN service_requests r ON r.id = n.request_id
 WHERE n.status = ANY($1::text[]) AND n.request_id IS NOT NULL AND n.params ? 'state'
   AND (r.id IS NULL OR r.current_state IS DISTINCT FROM n.params ->> 'state')
"""


async def with_request(db: Db, row_id: int) -> asyncpg.Record | None:
    """The state a notification names and its request's state now (``WITH_REQUEST_SQL``);
    None when the row does not name a request state."""
    return await db.fetchrow(WITH_REQUEST_SQL, row_id)


async def moved_count(db: Db, statuses: tuple[str, ...]) -> int:
    """Rows in ``statuses`` whose request has moved on from the state they name."""
    return int(await db.fetchval(MOVED_COUNT_SQL, list(statuses)))


async def get(db: Db, row_id: int) -> asyncpg.Record | None:
    """One outbox row with ``recipient_name`` (the user's full name, or None when the chat
    is no known user), or None."""
    return await db.fetchrow(
        """
        SELECT n.*, u.full_name AS recipient_name
        FROM pending_notifications n
        LEFT JOIN users u
          ON u.id = n.recipient_id OR (n.recipient_id IS NULL AND u.telegram_id = n.chat_id)
        WHERE n.id = $1
        """,
        row_id,
    )


async def cleanup_old(db: Db, retention_days: int) -> int:
    """``cleanup_old_notifications``: delete sent, discarded and skipped rows not changed for
    ``retention_days`` days; returns how many were deleted."""
    return int(await db.fetchval("SELECT cleanup_old_notifications($1)", retention_days))
