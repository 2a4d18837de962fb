"""SQL of the admin alert path: ``admin_alerts`` (every alert raised, its delivery status)
and ``admin_alert_mutes`` (a kind of alert muted by one admin until a time).

Callers hold ``lock`` (a transaction-level advisory lock) while they decide, so that two
instances raising alerts at the same moment count the rate limit and the duplicates right.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import asyncpg

from database.pool import AnyConnection

# Serializes alert decisions across instances until the end of the caller's transaction.
LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext('admin-alerts'))"

# The latest alert with this dedupe key raised within the window (seconds), if any.
RECENT_BY_KEY_SQL = """
SELECT id FROM admin_alerts
 WHERE dedupe_key = $1 AND created_at > now() - make_interval(secs => $2)
 ORDER BY created_at DESC LIMIT 1
"""

ADD_DUPLICATE_SQL = "UPDATE admin_alerts SET duplicates = duplicates + 1 WHERE id = $1"

# Alerts delivered one by one within the rate window (seconds): the rate limit's count.
SENT_SINCE_SQL = """
SELECT count(*) FROM admin_alerts
 WHERE status = 'sent' AND delivered_at > now() - make_interval(secs => $1)
"""

INSERT_SQL = """
INSERT INTO admin_alerts (kind, dedupe_key, template_key, params, status, delivered_at)
VALUES ($1, $2, $3, $4::jsonb, $5, CASE WHEN $5 = 'sent' THEN now() END)
RETURNING id
"""

SET_RECIPIENTS_SQL = "UPDATE admin_alerts SET recipients = $2 WHERE id = $1"

# Chats (among $2) that muted kind $1 and whose mute has not expired.
MUTED_CHATS_SQL = """
SELECT chat_id FROM admin_alert_mutes
 WHERE kind = $1 AND chat_id = ANY($2::bigint[]) AND muted_until > now()
"""

# Every live mute of the given chats: (chat_id, kind) pairs.
MUTES_OF_CHATS_SQL = """
SELECT chat_id, kind, muted_until FROM admin_alert_mutes
 WHERE chat_id = ANY($1::bigint[]) AND muted_until > now()
"""

# Alerts waiting for the digest, oldest first, locked so that one flush takes them.
QUEUED_SQL = """
SELECT id, kind, dedupe_key, template_key, params, duplicates, created_at
  FROM admin_alerts WHERE status = 'queued'
 ORDER BY id LIMIT $1
   FOR UPDATE SKIP LOCKED
"""

MARK_DIGESTED_SQL = """
UPDATE admin_alerts SET status = 'digested', delivered_at = now(), recipients = $2
 WHERE id = ANY($1::bigint[])
"""

MUTE_SQL = """
INSERT INTO admin_alert_mutes (chat_id, kind, muted_until, muted_by)
VALUES ($1, $2, now() + make_interval(secs => $3), $4)
ON CONFLICT (chat_id, kind) DO UPDATE
    SET muted_until = EXCLUDED.muted_until, muted_by = EXCLUDED.muted_by, created_at = now()
RETURNING muted_until
"""

UNMUTE_SQL = """
DELETE FROM admin_alert_mutes WHERE chat_id = $1 AND kind = $2 AND muted_until > now()
RETURNING muted_until
"""


async def lock(conn: AnyConnection) -> None:
    """Take the alert path's advisory lock until the end of the current transaction."""
    await conn.execute(LOCK_SQL)


async def recent_by_key(conn: AnyConnection, dedupe_key: str, window_s: float) -> int | None:
    """Id of the latest alert with ``dedupe_key`` raised in the last ``window_s`` seconds."""
    return cast(int | None, await conn.fetchval(RECENT_BY_KEY_SQL, dedupe_key, float(window_s)))


async def add_duplicate(conn: AnyConnection, alert_id: int) -> None:
    """Count one more repeat of an alert that was not sent again."""
    await conn.execute(ADD_DUPLICATE_SQL, alert_id)


async def sent_since(conn: AnyConnection, window_s: float) -> int:
    """Alerts delivered one by one in the last ``window_s`` seconds."""
    return cast(int, await conn.fetchval(SENT_SINCE_SQL, float(window_s)))


async def insert(
    conn: AnyConnection,
    *,
    kind: str,
    dedupe_key: str,
    template_key: str,
    params: dict[str, Any],
    status: str,
) -> int:
    """Store a raised alert ('sent' or 'queued'); returns its id."""
    return cast(
        int, await conn.fetchval(INSERT_SQL, kind, dedupe_key, template_key, params, status)
    )


async def set_recipients(conn: AnyConnection, alert_id: int, recipients: int) -> None:
    """How many admins the alert was enqueued for."""
    await conn.execute(SET_RECIPIENTS_SQL, alert_id, recipients)


async def muted_chats(conn: AnyConnection, kind: str, chat_ids: list[int]) -> set[int]:
    """Which of ``chat_ids`` muted ``kind`` (mute not expired)."""
    rows = await conn.fetch(MUTED_CHATS_SQL, kind, chat_ids)
    return {row["chat_id"] for row in rows}


async def mutes_of_chats(conn: AnyConnection, chat_ids: list[int]) -> set[tuple[int, str]]:
    """Live mutes of ``chat_ids`` as (chat_id, kind) pairs."""
    rows = await conn.fetch(MUTES_OF_CHATS_SQL, chat_ids)
    return {(row["chat_id"], row["kind"]) for row in rows}


async def queued(conn: AnyConnection, limit: int) -> list[asyncpg.Record]:
    """Alerts waiting for the digest, oldest first (locked; call in a transaction)."""
    return await conn.fetch(QUEUED_SQL, limit)


async def mark_digested(conn: AnyConnection, alert_ids: list[int], recipients: int) -> None:
    """The alerts went out in a digest to ``recipients`` admins."""
    await conn.execute(MARK_DIGESTED_SQL, alert_ids, recipients)


async def mute(
    conn: AnyConnection | asyncpg.Pool,
    *,
    chat_id: int,
    kind: str,
    duration_s: float,
    muted_by: int | None,
) -> dt.datetime:
    """Mute ``kind`` for ``chat_id`` for ``duration_s`` seconds from now (replacing an earlier
    mute of the same kind); returns the end of the mute."""
    return cast(
        dt.datetime, await conn.fetchval(MUTE_SQL, chat_id, kind, float(duration_s), muted_by)
    )


async def unmute(
    conn: AnyConnection | asyncpg.Pool, *, chat_id: int, kind: str
) -> dt.datetime | None:
    """Lift a live mute; returns when it would have ended, or None when there was none."""
    return cast(dt.datetime | None, await conn.fetchval(UNMUTE_SQL, chat_id, kind))


async def mute_of(
    conn: AnyConnection | asyncpg.Pool, *, chat_id: int, kind: str
) -> dt.datetime | None:
    """End of the live mute of ``kind`` for ``chat_id``, or None."""
    return cast(
        dt.datetime | None,
        await conn.fetchval(
            "SELECT muted_until FROM admin_alert_mutes "
            "WHERE chat_id = $1 AND kind = $2 AND muted_until > now()",
            chat_id,
            kind,
        ),
    )
