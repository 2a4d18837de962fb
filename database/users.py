"""SQL of ``users``."""

from __future__ import annotations

import asyncpg

from database.pool import AnyConnection

CHANGES_CHANNEL = "users_changed"
"""NOTIFY channel of changed or deleted ``users`` rows (migration 0006): the payload is the
row's ``telegram_id`` as text, ``*`` after a TRUNCATE of the table."""

# Register on /start, or refresh name and username; writing to the bot again clears the
# blocked mark (the user can be reached again).
UPSERT_FROM_TELEGRAM_SQL = """
INSERT INTO users (telegram_id, full_name, username, language, role)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (telegram_id) DO UPDATE SET
    full_name = EXCLUDED.full_name,
    username = EXCLUDED.username,
    blocked_bot_at = NULL,
    updated_at = now()
RETURNING *
"""


async def upsert_from_telegram(
    conn: AnyConnection | asyncpg.Pool,
    *,
    telegram_id: int,
    full_name: str,
    username: str | None,
    language: str,
    role: str = "client",
) -> asyncpg.Record:
    """Create or refresh the user behind a Telegram account; returns the row."""
    row = await conn.fetchrow(
        UPSERT_FROM_TELEGRAM_SQL, telegram_id, full_name, username, language, role
    )
    assert row is not None
    return row


# The sender of an update, in one round trip: their row as it is, or, on a first contact or
# after "blocked the bot", registered or refreshed as in UPSERT_FROM_TELEGRAM_SQL (the INSERT
# only runs when no unblocked row was found; $4 language and $5 role apply to a new user).
LOAD_OR_REGISTER_SQL = """
WITH found AS (
    SELECT * FROM users WHERE telegram_id = $1
), written AS (
    INSERT INTO users (telegram_id, full_name, username, language, role)
    SELECT $1, $2, $3, $4, $5
     WHERE NOT EXISTS (SELECT 1 FROM found WHERE blocked_bot_at IS NULL)
    ON CONFLICT (telegram_id) DO UPDATE SET
        full_name = EXCLUDED.full_name,
        username = EXCLUDED.username,
        blocked_bot_at = NULL,
        updated_at = now()
    RETURNING *
)
SELECT * FROM written
UNION ALL
SELECT * FROM found WHERE NOT EXISTS (SELECT 1 FROM written)
"""


async def load_or_register(
    conn: AnyConnection | asyncpg.Pool,
    *,
    telegram_id: int,
    full_name: str,
    username: str | None,
    language: str,
    role: str,
) -> asyncpg.Record:
    """The user behind a Telegram account, registered on first contact (with ``language``
    and ``role``) and unblocked when they had blocked the bot; one statement."""
    row = await conn.fetchrow(
        LOAD_OR_REGISTER_SQL, telegram_id, full_name, username, language, role
    )
    assert row is not None
    return row


async def get_by_telegram_id(
    conn: AnyConnection | asyncpg.Pool, telegram_id: int
) -> asyncpg.Record | None:
    """The user with this Telegram id, or None."""
    return await conn.fetchrow("SELECT * FROM users WHERE telegram_id = $1", telegram_id)


async def get(conn: AnyConnection | asyncpg.Pool, user_id: int) -> asyncpg.Record | None:
    """The user with this id, or None."""
    return await conn.fetchrow("SELECT * FROM users WHERE id = $1", user_id)


async def set_language(conn: AnyConnection | asyncpg.Pool, user_id: int, language: str) -> None:
    """Change the user's language (en, ru, uz)."""
    await conn.execute(
        "UPDATE users SET language = $2, updated_at = now() WHERE id = $1", user_id, language
    )


async def mark_unreachable(conn: AnyConnection | asyncpg.Pool, telegram_id: int) -> None:
    """Mark the user as unreachable (Telegram 403 / chat not found) until they write again."""
    await conn.execute(
        "UPDATE users SET blocked_bot_at = now(), updated_at = now() "
        "WHERE telegram_id = $1 AND blocked_bot_at IS NULL",
        telegram_id,
    )


async def reachable_by_role(conn: AnyConnection | asyncpg.Pool, role: str) -> list[asyncpg.Record]:
    """Active users of ``role`` the bot can reach, oldest first."""
    return await conn.fetch(
        "SELECT * FROM users WHERE role = $1 AND is_active AND blocked_bot_at IS NULL ORDER BY id",
        role,
    )
