"""SQL of the transactional outbox (``pending_notifications``).

``enqueue`` and ``enqueue_many`` must be called on the connection of the transaction whose
change causes the notification: a rollback then also cancels the notification, and a crash
loses none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from database.pool import AnyConnection

# Insert one notification unless its idempotency key is already there (same business event).
ENQUEUE_SQL = """
INSERT INTO pending_notifications
    (idempotency_key, recipient_id, chat_id, template_key, params, request_id)
VALUES ($1, $2, $3, $4, $5::jsonb, $6)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id
"""


async def enqueue(
    conn: AnyConnection,
    *,
    idempotency_key: str,
    chat_id: int,
    template_key: str,
    params: dict[str, Any] | None = None,
    recipient_id: int | None = None,
    request_id: int | None = None,
) -> int | None:
    """Add a notification to the outbox; returns its id, or None for a duplicate key."""
    return cast(
        int | None,
        await conn.fetchval(
            ENQUEUE_SQL,
            idempotency_key,
            recipient_id,
            chat_id,
            template_key,
            params or {},
            request_id,
        ),
    )


@dataclass(frozen=True, slots=True)
class Notification:
    """One row for ``enqueue_many``: the arguments of ``enqueue``."""

    idempotency_key: str
    chat_id: int
    template_key: str
    params: dict[str, Any] = field(default_factory=dict)
    recipient_id: int | None = None
    request_id: int | None = None


# Insert many notifications in one statement (fan-out: every admin, every staff member of a
# role), each unless its idempotency key is already there; one array per column.
ENQUEUE_MANY_SQL = """
INSERT INTO pending_notifications
    (idempotency_key, recipient_id, chat_id, template_key, params, request_id)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::jsonb[],
                     $6::bigint[])
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id
"""


async def enqueue_many(conn: AnyConnection, notifications: Sequence[Notification]) -> int:
    """Add ``notifications`` to the outbox with one statement (call it on the connection of
    the causing transaction, like ``enqueue``); returns how many were new (a key already in
    the outbox adds nothing)."""
    if not notifications:
        return 0
    rows = await conn.fetch(
        ENQUEUE_MANY_SQL,
        [n.idempotency_key for n in notifications],
        [n.recipient_id for n in notifications],
        [n.chat_id for n in notifications],
        [n.template_key for n in notifications],
        [n.params for n in notifications],
        [n.request_id for n in notifications],
    )
    return len(rows)


# Admin recipients: users with the admin role who can be reached.
ADMIN_RECIPIENTS_SQL = """
SELECT id, telegram_id FROM users
 WHERE role = 'admin' AND is_active AND blocked_bot_at IS NULL
"""


async def admin_recipients(
    conn: AnyConnection, extra_telegram_ids: list[int] | tuple[int, ...] = ()
) -> list[tuple[int | None, int]]:
    """(user id or None, chat id) of every admin: admin-role users plus ``ADMIN_IDS``."""
    rows = await conn.fetch(ADMIN_RECIPIENTS_SQL)
    result: dict[int, int | None] = {row["telegram_id"]: row["id"] for row in rows}
    if extra_telegram_ids:
        known = await conn.fetch(
            "SELECT id, telegram_id, blocked_bot_at FROM users "
            "WHERE telegram_id = ANY($1::bigint[])",
            list(extra_telegram_ids),
        )
        by_tg = {row["telegram_id"]: row for row in known}
        for telegram_id in extra_telegram_ids:
            row = by_tg.get(telegram_id)
            if row is not None and row["blocked_bot_at"] is not None:
                continue
            result.setdefault(telegram_id, row["id"] if row is not None else None)
    return [(user_id, chat_id) for chat_id, user_id in result.items()]


async def enqueue_for_admins(
    conn: AnyConnection,
    *,
    key_prefix: str,
    template_key: str,
    params: dict[str, Any],
    extra_telegram_ids: list[int] | tuple[int, ...] = (),
) -> int:
    """Enqueue one notification per admin (see ``admin_recipients``) with the idempotency
    key ``{key_prefix}:{chat_id}``; returns how many were new (a repeated prefix adds none)."""
    recipients = await admin_recipients(conn, extra_telegram_ids)
    return await enqueue_many(
        conn,
        [
            Notification(f"{key_prefix}:{chat_id}", chat_id, template_key, params, user_id)
            for user_id, chat_id in recipients
        ],
    )
