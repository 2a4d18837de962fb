"""``UserMiddleware`` loads the sender with one statement (``users.load_or_register``):
registration on first contact, the stored row afterwards, a blocked mark cleared when the
user writes again, and each of these in one round trip."""

from __future__ import annotations

import asyncio

import asyncpg

from database import users


async def _load(conn: asyncpg.Connection, telegram_id: int, **overrides: object) -> asyncpg.Record:
    options: dict[str, object] = {
        "telegram_id": telegram_id, "full_name": "Ann Lee", "username": "ann",
        "language": "ru", "role": "client",
    }  # fmt: skip
    options.update(overrides)
    return await users.load_or_register(conn, **options)  # type: ignore[arg-type]


async def test_first_contact_registers_later_ones_read_and_blocked_is_cleared(
    pool: asyncpg.Pool,
) -> None:
    statements: list[str] = []

    def log(record: asyncpg.connection.LoggedQuery) -> None:
        statements.append(record.query)

    async with pool.acquire() as conn:
        conn.add_query_logger(log)
        first = await _load(conn, 501, role="admin")
        assert (first["role"], first["language"], first["full_name"]) == ("admin", "ru", "Ann Lee")
        # an admin changed the role and the user their language: a later contact keeps both
        await conn.execute(
            "UPDATE users SET role = 'technician', language = 'uz', updated_at = now() - "
            "interval '1 hour' WHERE telegram_id = 501"
        )
        again = await _load(conn, 501, full_name="Renamed", language="en", role="client")
        assert again["id"] == first["id"]
        assert (again["role"], again["language"], again["full_name"]) == (
            "technician", "uz", "Ann Lee"
        )  # fmt: skip
        await users.mark_unreachable(conn, 501)
        back = await _load(conn, 501, full_name="Ann B. Lee", language="en", role="client")
        assert back["blocked_bot_at"] is None
        assert (back["role"], back["language"], back["full_name"]) == (
            "technician", "uz", "Ann B. Lee"
        )  # fmt: skip
        conn.remove_query_logger(log)
    await asyncio.sleep(0)
    loads = [q for q in statements if "WITH found AS" in q]
    assert len(loads) == 3
    assert len(statements) == 5  # three loads, the role change, the blocked mark
    assert await pool.fetchval("SELECT count(*) FROM users WHERE telegram_id = 501") == 1


async def test_concurrent_first_contacts_register_one_user(pool: asyncpg.Pool) -> None:
    async def contact() -> int:
        async with pool.acquire() as conn:
            return (await _load(conn, 777))["id"]

    ids = await asyncio.gather(*(contact() for _ in range(8)))
    assert len(set(ids)) == 1
    assert await pool.fetchval("SELECT count(*) FROM users WHERE telegram_id = 777") == 1
