"""Small builders of rows for tests (plain SQL on a connection or pool)."""

from __future__ import annotations

import itertools

import asyncpg

_telegram_ids = itertools.count(10_000_001)


async def make_user(
    db: asyncpg.Connection | asyncpg.Pool,
    *,
    role: str = "client",
    language: str = "en",
    name: str | None = None,
    telegram_id: int | None = None,
) -> asyncpg.Record:
    """Insert a user; returns the row."""
    telegram_id = telegram_id or next(_telegram_ids)
    row = await db.fetchrow(
        "INSERT INTO users (telegram_id, full_name, role, language) VALUES ($1, $2, $3, $4) "
        "RETURNING *",
        telegram_id,
        name or f"{role} {telegram_id}",
        role,
        language,
    )
    assert row is not None
    return row


async def make_request(
    db: asyncpg.Connection | asyncpg.Pool,
    *,
    client_id: int,
    workflow_type: str = "connection",
    state: str = "new",
    role: str | None = "manager",
    hours_in_state: float = 0,
    status: str = "active",
    assignee_id: int | None = None,
) -> asyncpg.Record:
    """Insert a request that entered ``state`` ``hours_in_state`` hours ago."""
    row = await db.fetchrow(
        """
        INSERT INTO service_requests (workflow_type, client_id, description, current_state,
                                      owner_role, status, assignee_id, state_entered_at)
        VALUES ($1, $2, 'test request', $3, $4, $5, $6,
                now() - make_interval(secs => $7 * 3600))
        RETURNING *
        """,
        workflow_type,
        client_id,
        state,
        role,
        status,
        assignee_id,
        float(hours_in_state),
    )
    assert row is not None
    return row


async def make_material(
    db: asyncpg.Connection | asyncpg.Pool, *, sku: str, balance: int = 0, ledger: int | None = None
) -> asyncpg.Record:
    """Insert a material with ``balance`` and one receipt of ``ledger`` (default: balance)."""
    row = await db.fetchrow(
        "INSERT INTO materials (sku, name, balance) VALUES ($1, $1, $2) RETURNING *", sku, balance
    )
    assert row is not None
    quantity = balance if ledger is None else ledger
    if quantity:
        await db.execute(
            "INSERT INTO inventory_transactions (material_id, kind, quantity, idempotency_key) "
            "VALUES ($1, CASE WHEN $2 > 0 THEN 'receipt' ELSE 'adjustment' END, $2, $3)",
            row["id"],
            quantity,
            f"test:opening:{sku}",
        )
    return row


async def receive(
    conn: asyncpg.Connection, *, material_id: int, quantity: int, idempotency_key: str
) -> None:
    """Stock received outside the bot: a ``receipt`` ledger row and the balance, together
    (call inside a transaction)."""
    await conn.execute(
        "INSERT INTO inventory_transactions (material_id, kind, quantity, idempotency_key) "
        "VALUES ($1, 'receipt', $2, $3)",
        material_id,
        quantity,
        idempotency_key,
    )
    await conn.execute(
        "UPDATE materials SET balance = balance + $2 WHERE id = $1", material_id, quantity
    )
