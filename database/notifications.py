"""SQL of the notification sender: claiming outbox rows with a lease, recording outcomes, the
bounded retry queue (``notification_retry_queue``), the shared sender state and the admin
operations on notifications.

Time: every due and lease comparison uses the database clock (``now()``), so that several
instances agree whatever their own clocks say. Delays are passed in seconds.

Statuses of ``pending_notifications``: pending (new, or put back without spending an
attempt), sending (claimed, leased), sent, retrying (a backoff retry is scheduled: exactly
one 'waiting' row in ``notification_retry_queue``), dead (dead letter, kept), skipped
(recipient unreachable), discarded (an admin gave up on it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from database.pool import AnyConnection

Db = AnyConnection | asyncpg.Pool

CHANNEL = "pending_notifications"
"""The LISTEN/NOTIFY channel a commit of new outbox rows notifies (migration trigger)."""

# Claim up to $2 rows for claim $1 for $3 seconds: 'sending' rows whose lease expired (their
# sender died) first, then due rows oldest first. FOR UPDATE SKIP LOCKED lets several
# instances claim at once without waiting on each other or taking the same row; each branch
# walks its own partial index. Nothing is claimed while a Telegram 429 pause is in force.
# The recipient's language and reachability come with each row (by recipient id, else by the
# Telegram id equal to the chat id).
CLAIM_SQL = """
WITH paused AS (
    SELECT EXISTS (SELECT 1 FROM notification_sender_state WHERE paused_until > now()) AS yes
),
expired AS (
    SELECT id FROM pending_notifications
     WHERE status = 'sending' AND lease_until < now() AND NOT (SELECT yes FROM paused)
     ORDER BY lease_until
     LIMIT $2
     FOR UPDATE SKIP LOCKED
),
due AS (
    SELECT id FROM pending_notifications
     WHERE status IN ('pending', 'retrying') AND next_attempt_at <= now()
       AND NOT (SELECT yes FROM paused)
     ORDER BY next_attempt_at, id
     LIMIT $2
     FOR UPDATE SKIP LOCKED
),
picked AS (
    (SELECT id FROM expired) UNION ALL (SELECT id FROM due) LIMIT $2
),
claimed AS (
    UPDATE pending_notifications n
       SET status = 'sending', claimed_by = $1,
           lease_until = now() + make_interval(secs => $3), updated_at = now()
      FROM picked
     WHERE n.id = picked.id
    RETURNING n.*
)
SELECT c.*, u.language AS recipient_language,
       (u.blocked_bot_at IS NOT NULL) AS recipient_blocked
  FROM claimed c
  LEFT JOIN LATERAL (
      SELECT language, blocked_bot_at FROM users
       WHERE (c.recipient_id IS NOT NULL AND id = c.recipient_id)
          OR (c.recipient_id IS NULL AND telegram_id = c.chat_id)
       LIMIT 1
  ) u ON TRUE
 ORDER BY c.next_attempt_at, c.id
"""

# Delivered, many at once (group commit of concurrent sends): ids $1, claims $2, Telegram
# message ids $3; returns the ids marked (a row whose claim was lost is left alone).
MARK_SENT_MANY_SQL = """
WITH input AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[]) AS t(id, claim, message_id)
), n AS (
    UPDATE pending_notifications p
       SET status = 'sent', telegram_message_id = i.message_id, sent_at = now(),
           attempts = p.attempts + 1, claimed_by = NULL, lease_until = NULL,
           last_error = NULL, updated_at = now()
      FROM input i
     WHERE p.id = i.id AND p.claimed_by = i.claim
    RETURNING p.id
), q AS (
    UPDATE notification_retry_queue SET status = 'done'
     WHERE notification_id IN (SELECT id FROM n) AND status = 'waiting'
)
SELECT id FROM n
"""

# Put a claimed row back without spending an attempt, due in $3 seconds (a 429's retry_after,
# or the wait a rate limit asks for). It returns to 'retrying' when a retry is scheduled for
# it (its waiting entry moves with it), else to 'pending'. $4: the error, NULL keeps the last.
RELEASE_SQL = """
WITH n AS (
    UPDATE pending_notifications p
       SET status = CASE WHEN EXISTS (
                             SELECT 1 FROM notification_retry_queue q
                              WHERE q.notification_id = p.id AND q.status = 'waiting')
                         THEN 'retrying' ELSE 'pending' END,
           next_attempt_at = now() + make_interval(secs => $3),
           last_error = COALESCE($4, last_error),
           claimed_by = NULL, lease_until = NULL, updated_at = now()
     WHERE id = $1 AND claimed_by = $2
    RETURNING id, next_attempt_at
), q AS (
    UPDATE notification_retry_queue q SET retry_at = n.next_attempt_at
      FROM n WHERE q.notification_id = n.id AND q.status = 'waiting'
)
SELECT count(*) FROM n
"""

# A final outcome: 'dead' (dead letter) or 'skipped' (recipient unreachable); $6 attempts
# spent (0 when nothing was sent). A waiting retry-queue entry ends with the row.
MARK_FINAL_SQL = """
WITH n AS (
    UPDATE pending_notifications
       SET status = $3, attempts = attempts + $6, last_error = COALESCE($4, last_error),
           dead_reason = $5, claimed_by = NULL, lease_until = NULL, updated_at = now()
     WHERE id = $1 AND claimed_by = $2
    RETURNING id, status
), q AS (
    UPDATE notification_retry_queue q
       SET status = CASE WHEN n.status = 'dead' THEN 'dead' ELSE 'done' END
      FROM n WHERE q.notification_id = n.id AND q.status = 'waiting'
)
SELECT count(*) FROM n
"""

# The retry queue's bookkeeping is serialized by this transaction-level advisory lock, so that
# the bound is exact with several instances.
QUEUE_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('notification_retry_queue'))"

# End the row's waiting entry (the attempt it was waiting for has been made); returns whether
# there was one (the row was already in the queue).
CLOSE_WAITING_SQL = """
UPDATE notification_retry_queue SET status = 'done'
 WHERE notification_id = $1 AND status = 'waiting'
RETURNING id
"""

QUEUE_DEPTH_SQL = "SELECT count(*) FROM notification_retry_queue WHERE status = 'waiting'"

# Schedule the next attempt of a claimed row in $3 seconds, spending an attempt.
MARK_RETRYING_SQL = """
UPDATE pending_notifications
   SET status = 'retrying', attempts = attempts + 1,
       next_attempt_at = now() + make_interval(secs => $3),
       last_error = $4, claimed_by = NULL, lease_until = NULL, updated_at = now()
 WHERE id = $1 AND claimed_by = $2
RETURNING attempts, next_attempt_at
"""

INSERT_RETRY_SQL = """
INSERT INTO notification_retry_queue
    (notification_id, attempt, error_category, error_code, error_message, retry_at)
VALUES ($1, $2, $3, $4, $5, $6)
"""

# Start a queue-full episode; returns its start when this call started it (alert once).
START_QUEUE_FULL_SQL = """
UPDATE notification_sender_state SET queue_full_since = now(), updated_at = now()
 WHERE queue_full_since IS NULL
RETURNING queue_full_since
"""

# End the episode once the queue has drained to $1 waiting entries or fewer.
END_QUEUE_FULL_SQL = """
UPDATE notification_sender_state SET queue_full_since = NULL, updated_at = now()
 WHERE queue_full_since IS NOT NULL
   AND (SELECT count(*) FROM notification_retry_queue WHERE status = 'waiting') <= $1
RETURNING TRUE
"""

# Telegram 429: hold every instance's claims for $1 seconds (a longer pause is kept).
PAUSE_SQL = """
UPDATE notification_sender_state
   SET paused_until = GREATEST(COALESCE(paused_until, '-infinity'),
                               now() + make_interval(secs => $1)),
       updated_at = now()
RETURNING paused_until
"""

# A group became a supergroup: every row not yet final follows it to the new chat id.
MIGRATE_CHAT_SQL = """
UPDATE pending_notifications SET chat_id = $2, updated_at = now()
 WHERE chat_id = $1 AND status IN ('pending', 'sending', 'retrying', 'dead')
"""

# Graceful stop: give back the rows claimed by claims named $1% (this instance).
RELEASE_INSTANCE_SQL = """
UPDATE pending_notifications p
   SET status = CASE WHEN EXISTS (
                         SELECT 1 FROM notification_retry_queue q
                          WHERE q.notification_id = p.id AND q.status = 'waiting')
                     THEN 'retrying' ELSE 'pending' END,
       claimed_by = NULL, lease_until = NULL, updated_at = now()
 WHERE status = 'sending' AND claimed_by LIKE $1 || '%'
"""


@dataclass(frozen=True, slots=True)
class RetryScheduled:
    """A retry written: the row's attempts so far and when the next attempt is due (the
    database clock's time)."""

    attempts: int
    next_attempt_at: Any


async def claim(db: Db, claim_id: str, limit: int, lease_s: float) -> list[asyncpg.Record]:
    """Claim up to ``limit`` rows for ``lease_s`` seconds (see ``CLAIM_SQL``); each record
    has the row's columns plus ``recipient_language`` and ``recipient_blocked``."""
    return await db.fetch(CLAIM_SQL, claim_id, limit, float(lease_s))


async def mark_sent_many(db: Db, items: list[tuple[int, str, int | None]]) -> set[int]:
    """Delivered: (row id, claim id, Telegram message id) for each; returns the ids marked."""
    rows = await db.fetch(
        MARK_SENT_MANY_SQL,
        [item[0] for item in items],
        [item[1] for item in items],
        [item[2] for item in items],
    )
    return {row["id"] for row in rows}


async def release(
    db: Db, row_id: int, claim_id: str, *, delay_s: float, error: str | None = None
) -> bool:
    """Put the row back, due in ``delay_s`` seconds, without spending an attempt."""
    return bool(await db.fetchval(RELEASE_SQL, row_id, claim_id, float(delay_s), error))


async def mark_final(
    db: Db,
    row_id: int,
    claim_id: str,
    *,
    status: str,
    error: str | None,
    reason: str | None,
    spend_attempt: bool = True,
) -> bool:
    """A final outcome: ``status`` 'dead' or 'skipped', with the error and a short reason."""
    return bool(
        await db.fetchval(
            MARK_FINAL_SQL, row_id, claim_id, status, error, reason, int(spend_attempt)
        )
    )


async def lock_retry_queue(conn: AnyConnection) -> None:
    """Serialize retry-queue bookkeeping until the end of the caller's transaction."""
    await conn.execute(QUEUE_LOCK_SQL)


async def close_waiting_entry(conn: AnyConnection, row_id: int) -> bool:
    """End the row's waiting retry-queue entry; True when it had one."""
    return await conn.fetchval(CLOSE_WAITING_SQL, row_id) is not None


async def queue_depth(db: Db) -> int:
    """Waiting entries in the retry queue (equals the 'retrying' rows)."""
    return int(await db.fetchval(QUEUE_DEPTH_SQL))


async def mark_retrying(
    conn: AnyConnection,
    row_id: int,
    claim_id: str,
    *,
    delay_s: float,
    error: str,
    error_category: str | None,
    error_code: int | None,
) -> RetryScheduled | None:
    """Spend an attempt and schedule the next one in ``delay_s`` seconds with a waiting
    retry-queue entry; None when the claim was lost. Call in a transaction."""
    row = await conn.fetchrow(MARK_RETRYING_SQL, row_id, claim_id, float(delay_s), error)
    if row is None:
        return None
    await conn.execute(
        INSERT_RETRY_SQL,
        row_id,
        row["attempts"],
        error_category,
        error_code,
        error,
        row["next_attempt_at"],
    )
    return RetryScheduled(attempts=row["attempts"], next_attempt_at=row["next_attempt_at"])


async def start_queue_full(conn: AnyConnection) -> Any:
    """Record that the queue is full; returns the episode's start (a datetime) only to the
    call that started it, else None."""
    return await conn.fetchval(START_QUEUE_FULL_SQL)


async def queue_full_since(db: Db) -> Any:
    """When the current queue-full episode started, or None."""
    return await db.fetchval("SELECT queue_full_since FROM notification_sender_state")


async def end_queue_full(db: Db, low_water: int) -> bool:
    """End the queue-full episode if at most ``low_water`` entries wait; True if it ended."""
    return await db.fetchval(END_QUEUE_FULL_SQL, low_water) is not None


async def pause(db: Db, seconds: float) -> Any:
    """Hold every instance's claims for ``seconds``; returns the pause's end (database time)."""
    return await db.fetchval(PAUSE_SQL, float(seconds))


async def migrate_chat(db: Db, old_chat_id: int, new_chat_id: int) -> int:
    """Move every row not yet final from ``old_chat_id`` to ``new_chat_id``; returns how many."""
    status = await db.execute(MIGRATE_CHAT_SQL, old_chat_id, new_chat_id)
    return int(status.split()[-1])


async def release_instance(db: Db, claim_prefix: str) -> int:
    """Give back every row claimed under ``claim_prefix`` (graceful stop); returns how many."""
    status = await db.execute(RELEASE_INSTANCE_SQL, claim_prefix)
    return int(status.split()[-1])


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
