"""SQL of stock movements: the guarded balance update on ``materials`` and the ledger row in
``inventory_transactions``, both on the caller's transaction.

The ledger is the source of truth (signed ``quantity``: receipt/return > 0, issue < 0); the
balance on ``materials`` is kept equal to the ledger sum by writing both in one transaction.
Reconciliation (``database/inventory.py``) and reversals (``database/compensation.py``) live
elsewhere.
"""

from __future__ import annotations

from typing import cast

import asyncpg

from database.pool import AnyConnection

# One ledger row unless its idempotency key is already there (the same business event):
# a concurrent insert of the same key waits for the first one's transaction, then does
# nothing if it committed.
INSERT_ENTRY_SQL = """
INSERT INTO inventory_transactions
    (material_id, kind, quantity, request_id, actor_id, idempotency_key, note)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING *
"""

GET_BY_KEY_SQL = "SELECT * FROM inventory_transactions WHERE idempotency_key = $1"

# Guarded decrement: a single UPDATE whose WHERE re-checks the balance after waiting for a
# concurrent writer's row lock (READ COMMITTED re-evaluates the qualification on the newest
# row version), so concurrent uses can never take the balance below zero.
DECREMENT_SQL = """
UPDATE materials SET balance = balance - $2, updated_at = now()
 WHERE id = $1 AND balance >= $2
RETURNING balance
"""

BALANCE_SQL = "SELECT balance FROM materials WHERE id = $1"


async def insert_entry(
    conn: AnyConnection,
    *,
    material_id: int,
    kind: str,
    quantity: int,
    idempotency_key: str,
    request_id: int | None = None,
    actor_id: int | None = None,
    note: str | None = None,
) -> asyncpg.Record | None:
    """Append a ledger row; returns it, or None when ``idempotency_key`` already exists.

    ``quantity`` is signed (issue < 0). ``kind`` is receipt, issue, return or adjustment.
    """
    return await conn.fetchrow(
        INSERT_ENTRY_SQL, material_id, kind, quantity, request_id, actor_id, idempotency_key, note
    )


async def get_by_key(
    conn: AnyConnection | asyncpg.Pool, idempotency_key: str
) -> asyncpg.Record | None:
    """The ledger row with this idempotency key, or None."""
    return await conn.fetchrow(GET_BY_KEY_SQL, idempotency_key)


async def decrement_stock(conn: AnyConnection, material_id: int, quantity: int) -> int | None:
    """Take ``quantity`` (> 0) from the balance if at least that much is there.

    Returns the new balance, or None when the material is missing or the balance is below
    ``quantity`` (nothing changed).
    """
    return cast(int | None, await conn.fetchval(DECREMENT_SQL, material_id, quantity))


async def balance(conn: AnyConnection | asyncpg.Pool, material_id: int) -> int | None:
    """The material's balance, or None when there is no such material."""
    return cast(int | None, await conn.fetchval(BALANCE_SQL, material_id))


async def list_materials(
    conn: AnyConnection | asyncpg.Pool, *, limit: int, offset: int
) -> tuple[list[asyncpg.Record], int]:
    """A page of materials (id, sku, name, unit, balance) by name, and how many there are:
    what ``/use`` offers as buttons."""
    rows = await conn.fetch(
        """
        SELECT id, sku, name, unit, balance, count(*) OVER () AS total
          FROM materials
         ORDER BY name, id
         LIMIT $1 OFFSET $2
        """,
        limit,
        offset,
    )
    total = rows[0]["total"] if rows else int(await conn.fetchval("SELECT count(*) FROM materials"))
    return list(rows), total


async def get_material(
    conn: AnyConnection | asyncpg.Pool, material_id: int
) -> asyncpg.Record | None:
    """One material (id, sku, name, unit, balance), or None."""
    return await conn.fetchrow(
        "SELECT id, sku, name, unit, balance FROM materials WHERE id = $1", material_id
    )
