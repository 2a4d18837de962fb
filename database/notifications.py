"""SQL of the notification sender: claiming outbox rows with a lease and recording outcomes."""

from __future__ import annotations

import asyncpg

# Claim up to $2 due rows for sender $1 for $3 seconds. FOR UPDATE SKIP LOCKED lets several
# instances claim at once without waiting on each other or taking the same row; a 'sending'
# row whose lease expired (its sender died) is due again.
CLAIM_SQL = """
WITH due AS (
    SELECT id FROM pending_notifications
     WHERE (status IN ('pending', 'retrying') AND next_attempt_at <= now())
        OR (status = 'sending' AND lease_until < now())
     ORDER BY next_attempt_at, id
     LIMIT $2
     FOR UPDATE SKIP LOCKED
)
UPDATE pending_notifications n
   SET status = 'sending', claimed_by = $1,
       lease_until = now() + make_interval(secs => $3), updated_at = now()
  FROM due
 WHERE n.id = due.id
RETURNING n.*,
          (SELECT u.language FROM users u WHERE u.id = n.recipient_id) AS recipient_language,
          (SELECT u.blocked_bot_at IS NOT NULL FROM users u WHERE u.id = n.recipient_id)
              AS recipient_blocked
"""

MARK_SENT_SQL = """
UPDATE pending_notifications
   SET status = 'sent', telegram_message_id = $3, sent_at = now(), attempts = attempts + 1,
       claimed_by = NULL, lease_until = NULL, last_error = NULL, updated_at = now()
 WHERE id = $1 AND claimed_by = $2
"""

MARK_RETRY_SQL = """
UPDATE pending_notifications
   SET status = 'retrying', attempts = attempts + $4,
       next_attempt_at = now() + make_interval(secs => $3),
       last_error = $5, claimed_by = NULL, lease_until = NULL, updated_at = now()
 WHERE id = $1 AND claimed_by = $2
"""

MARK_FINAL_SQL = """
UPDATE pending_notifications
   SET status = $3, attempts = attempts + 1, last_error = $4, dead_reason = $5,
       claimed_by = NULL, lease_until = NULL, updated_at = now()
 WHERE id = $1 AND claimed_by = $2
"""


async def claim(
    conn: asyncpg.Connection | asyncpg.Pool, sender_id: str, limit: int, lease_s: float
) -> list[asyncpg.Record]:
    """Claim due rows (see ``CLAIM_SQL``)."""
    return await conn.fetch(CLAIM_SQL, sender_id, limit, float(lease_s))


async def mark_sent(
    conn: asyncpg.Connection | asyncpg.Pool, row_id: int, sender_id: str, message_id: int | None
) -> None:
    """Delivered: keep Telegram's message id."""
    await conn.execute(MARK_SENT_SQL, row_id, sender_id, message_id)


async def mark_retry(
    conn: asyncpg.Connection | asyncpg.Pool,
    row_id: int,
    sender_id: str,
    *,
    delay_s: float,
    spend_attempt: bool,
    error: str,
) -> None:
    """Schedule the next attempt in ``delay_s`` seconds."""
    await conn.execute(MARK_RETRY_SQL, row_id, sender_id, float(delay_s), int(spend_attempt), error)


async def mark_final(
    conn: asyncpg.Connection | asyncpg.Pool,
    row_id: int,
    sender_id: str,
    *,
    status: str,
    error: str | None,
    reason: str | None,
) -> None:
    """A final outcome: 'dead' (dead letter) or 'skipped' (recipient unreachable)."""
    await conn.execute(MARK_FINAL_SQL, row_id, sender_id, status, error, reason)


# Graceful shutdown: hand the rows sender $1 still holds back to the queue, due now, so that
# another instance sends them without waiting for the lease. A row that was never attempted
# goes back to 'pending', one that was goes back to 'retrying'; attempts are unchanged.
RELEASE_CLAIMS_SQL = """
UPDATE pending_notifications
   SET status = CASE WHEN attempts > 0 THEN 'retrying' ELSE 'pending' END,
       next_attempt_at = now(), claimed_by = NULL, lease_until = NULL, updated_at = now()
 WHERE status = 'sending' AND claimed_by = $1
"""


async def release_claims(conn: asyncpg.Connection | asyncpg.Pool, sender_id: str) -> int:
    """Release every row ``sender_id`` holds in 'sending'; returns how many were released."""
    status = await conn.execute(RELEASE_CLAIMS_SQL, sender_id)
    return int(status.split()[-1])
