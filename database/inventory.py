"""SQL of inventory reconciliation (``materials`` against the ledger).

The ledger ``inventory_transactions`` is the source of truth: ``materials.balance`` must equal
the sum of the material's ledger quantities. Detection queries are set-based: the
material-level check takes a material id range so that a run can report progress chunk by
chunk, orphans and duplicates are one pass each; the fix path runs the same checks for one
material while holding that material's row lock. Plans of the detection queries:
``docs/inventory-reconciliation.md``.

Concurrency contract (see ``database/ledger.py``): every change of ``materials.balance`` is a
relative update (``balance = balance + delta``) in the same transaction as its ledger row.
Reconciliation locks the material row (``FOR UPDATE``) and re-reads balance and ledger sum
before writing, so a concurrent movement is never overwritten.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncpg

from database.locks import advisory_lock
from database.pool import AnyConnection

# --- Detection (set-based, one material id range per call) ---------------------------------

# Materials whose balance is negative, whose ledger sum is negative, or whose balance differs
# from the ledger sum. The ledger side is an index-only scan of ix_inventory_tx_material.
MATERIAL_LEVEL_SQL = """
SELECT m.id AS material_id, m.sku, m.balance,
       COALESCE(l.ledger_sum, 0)::bigint AS ledger_sum
  FROM materials m
  LEFT JOIN (
        SELECT material_id, sum(quantity) AS ledger_sum
          FROM inventory_transactions
         WHERE material_id BETWEEN $1 AND $2
         GROUP BY material_id
       ) l ON l.material_id = m.id
 WHERE m.id BETWEEN $1 AND $2
   AND (m.balance < 0
        OR COALESCE(l.ledger_sum, 0) < 0
        OR m.balance <> COALESCE(l.ledger_sum, 0))
 ORDER BY m.id
"""

# Orphaned stock: per (material, request), the net of the ledger rows booked against a
# request that is cancelled, never reached a state that uses materials ($1: MATERIAL_STATES),
# or does not exist, when the net is an outflow and the newest row is older than the grace
# period ($2 seconds). A reversal carries the same request_id, so after a fix the net is 0.
# Driven from the requests: the "bad" ones are few, and their ledger rows are found through
# ix_inventory_tx_request; "missing" is a merge anti-join of the distinct ledger request ids
# (index-only) with the requests' primary key. One pass for the whole inventory.
ORPHANS_SQL = """
WITH bad (request_id, reason) AS (
    SELECT r.id, 'cancelled' FROM service_requests r WHERE r.status = 'cancelled'
    UNION ALL
    SELECT r.id, 'never_in_material_state'
      FROM service_requests r
     WHERE r.status <> 'cancelled'
       AND r.current_state <> ALL ($1::text[])
       AND NOT EXISTS (SELECT 1 FROM workflow_transitions w
                        WHERE w.request_id = r.id AND w.to_state = ANY ($1::text[]))
    UNION ALL
    SELECT l.request_id, 'missing'
      FROM (SELECT DISTINCT request_id FROM inventory_transactions
             WHERE request_id IS NOT NULL) l
     WHERE NOT EXISTS (SELECT 1 FROM service_requests r WHERE r.id = l.request_id)
)
SELECT t.material_id, t.request_id,
       sum(t.quantity)::bigint AS net,
       max(t.id) AS last_id,
       max(t.id) FILTER (WHERE t.kind = 'issue') AS last_issue_id,
       count(*) FILTER (WHERE t.kind = 'issue') AS issue_count,
       min(b.reason) AS reason
  FROM bad b
  JOIN inventory_transactions t ON t.request_id = b.request_id
 GROUP BY t.material_id, t.request_id
HAVING sum(t.quantity) < 0
   AND max(t.created_at) < now() - make_interval(secs => $2)
 ORDER BY t.material_id, t.request_id
"""
# The same rule for one material ($3), for the fix path under the material's lock: the
# material's rows are aggregated per request first, then each group's request is probed by
# primary key and ix_transitions_request. The benchmark checks that both find the same.
ORPHANS_ONE_SQL = """
SELECT g.material_id, g.request_id, g.net, g.last_id, g.last_issue_id, g.issue_count,
       CASE WHEN r.id IS NULL THEN 'missing'
            WHEN r.status = 'cancelled' THEN 'cancelled'
            ELSE 'never_in_material_state' END AS reason
  FROM (SELECT t.material_id, t.request_id,
               sum(t.quantity)::bigint AS net,
               max(t.id) AS last_id,
               max(t.id) FILTER (WHERE t.kind = 'issue') AS last_issue_id,
               count(*) FILTER (WHERE t.kind = 'issue') AS issue_count
          FROM inventory_transactions t
         WHERE t.material_id = $3 AND t.request_id IS NOT NULL
         GROUP BY t.material_id, t.request_id
        HAVING sum(t.quantity) < 0
           AND max(t.created_at) < now() - make_interval(secs => $2)) g
  LEFT JOIN service_requests r ON r.id = g.request_id
 WHERE r.id IS NULL
    OR r.status = 'cancelled'
    OR (r.current_state <> ALL ($1::text[])
        AND NOT EXISTS (SELECT 1 FROM workflow_transitions w
                         WHERE w.request_id = r.id AND w.to_state = ANY ($1::text[])))
 ORDER BY g.request_id
"""

# Duplicate references: rows after the first with the same (material, external_reference),
# neither reversal rows nor already reversed. Served by ix_inventory_tx_external_ref and
# ix_inventory_tx_reverses.
DUPLICATES_SQL = """
SELECT d.id AS transaction_id, d.material_id, d.external_reference, d.kind, d.quantity,
       d.first_id
  FROM (
        SELECT t.id, t.material_id, t.external_reference, t.kind, t.quantity,
               first_value(t.id) OVER (PARTITION BY t.material_id, t.external_reference
                                       ORDER BY t.id) AS first_id
          FROM inventory_transactions t
         WHERE t.external_reference IS NOT NULL
           AND t.material_id BETWEEN $1 AND $2
           AND t.reverses_id IS NULL
           AND NOT EXISTS (SELECT 1 FROM inventory_transactions v WHERE v.reverses_id = t.id)
       ) d
 WHERE d.id <> d.first_id
 ORDER BY d.material_id, d.id
"""

MATERIAL_RANGE_SQL = """
SELECT count(*) AS materials, min(id) AS min_id, max(id) AS max_id FROM materials
"""

# The next chunk of $2 materials after id $1 (keyset pagination): its last id and size.
NEXT_CHUNK_SQL = """
SELECT max(id) AS last_id, count(*) AS materials
  FROM (SELECT id FROM materials WHERE id > $1 ORDER BY id LIMIT $2) c
"""

# Balance and ledger sum of a set of materials (the ones a run reports on).
MATERIAL_STATES_SQL = """
SELECT m.id, m.sku, m.balance,
       COALESCE((SELECT sum(t.quantity) FROM inventory_transactions t
                  WHERE t.material_id = m.id), 0)::bigint AS ledger_sum
  FROM materials m
 WHERE m.id = ANY ($1::bigint[])
"""


async def material_range(conn: AnyConnection | asyncpg.Pool) -> tuple[int, int, int]:
    """(number of materials, smallest id, largest id); ids are 0 when there are none."""
    row = await conn.fetchrow(MATERIAL_RANGE_SQL)
    assert row is not None  # an aggregate without GROUP BY returns one row
    return int(row["materials"]), int(row["min_id"] or 0), int(row["max_id"] or 0)


async def next_chunk(
    conn: AnyConnection | asyncpg.Pool, after_id: int, size: int
) -> tuple[int, int] | None:
    """(largest id, number of materials) of the next ``size`` materials after ``after_id``;
    None when there are no more."""
    row = await conn.fetchrow(NEXT_CHUNK_SQL, after_id, size)
    assert row is not None  # an aggregate without GROUP BY returns one row
    if row["last_id"] is None:
        return None
    return int(row["last_id"]), int(row["materials"])


async def material_states(
    conn: AnyConnection | asyncpg.Pool, material_ids: Sequence[int]
) -> dict[int, asyncpg.Record]:
    """id -> (id, sku, balance, ledger_sum) for ``material_ids``."""
    if not material_ids:
        return {}
    rows = await conn.fetch(MATERIAL_STATES_SQL, list(material_ids))
    return {int(row["id"]): row for row in rows}


async def material_level(
    conn: AnyConnection | asyncpg.Pool, first_id: int, last_id: int
) -> list[asyncpg.Record]:
    """Materials in [first_id, last_id] with a negative balance or ledger, or drift."""
    return await conn.fetch(MATERIAL_LEVEL_SQL, first_id, last_id)


async def orphans(
    conn: AnyConnection | asyncpg.Pool,
    *,
    material_states: Sequence[str],
    grace_s: float,
    material_id: int | None = None,
) -> list[asyncpg.Record]:
    """Orphaned (material, request) outflows of the whole inventory, or of ``material_id``."""
    if material_id is None:
        return await conn.fetch(ORPHANS_SQL, list(material_states), float(grace_s))
    return await conn.fetch(ORPHANS_ONE_SQL, list(material_states), float(grace_s), material_id)


async def duplicates(
    conn: AnyConnection | asyncpg.Pool, first_id: int, last_id: int
) -> list[asyncpg.Record]:
    """Unreversed repeats of an external reference for materials in [first_id, last_id]."""
    return await conn.fetch(DUPLICATES_SQL, first_id, last_id)


# --- The fix path (one transaction per material) ------------------------------------------

LOCK_MATERIAL_SQL = "SELECT id, sku, balance FROM materials WHERE id = $1 FOR UPDATE"
LEDGER_SUM_SQL = """
SELECT COALESCE(sum(quantity), 0)::bigint FROM inventory_transactions WHERE material_id = $1
"""
ADJUST_BALANCE_SQL = """
UPDATE materials SET balance = balance + $2, updated_at = now() WHERE id = $1 RETURNING balance
"""
INSERT_CORRECTION_SQL = """
INSERT INTO inventory_transactions
    (material_id, kind, quantity, request_id, idempotency_key, reverses_id, note)
VALUES ($1, 'adjustment', $2, $3, $4, $5, $6)
RETURNING id
"""


async def lock_material(conn: AnyConnection, material_id: int) -> asyncpg.Record | None:
    """Lock the material row for the rest of the caller's transaction; None if it does not
    exist. Waits for a concurrent movement of the same material to commit."""
    return await conn.fetchrow(LOCK_MATERIAL_SQL, material_id)


async def ledger_sum(conn: AnyConnection, material_id: int) -> int:
    """Sum of the material's ledger quantities (0 without rows)."""
    return int(await conn.fetchval(LEDGER_SUM_SQL, material_id))


async def adjust_balance(conn: AnyConnection, material_id: int, delta: int) -> int:
    """Add ``delta`` to the balance (relative update); returns the new balance."""
    return int(await conn.fetchval(ADJUST_BALANCE_SQL, material_id, delta))


async def insert_correction(
    conn: AnyConnection,
    *,
    material_id: int,
    quantity: int,
    idempotency_key: str,
    request_id: int | None = None,
    reverses_id: int | None = None,
    note: str | None = None,
) -> int:
    """Write an ``adjustment`` ledger row; returns its id.

    Raises:
        asyncpg.UniqueViolationError: SQLSTATE 23505, ``idempotency_key`` already used (the
            same correction was written before).
    """
    return cast(
        int,
        await conn.fetchval(
            INSERT_CORRECTION_SQL,
            material_id,
            quantity,
            request_id,
            idempotency_key,
            reverses_id,
            note,
        ),
    )


# --- The reconciliation log -----------------------------------------------------------------

INSERT_LOG_SQL = """
INSERT INTO inventory_reconciliation_log
    (run_id, material_id, transaction_id, discrepancy_id, discrepancy, action, before_value,
     after_value, actor, reason, dry_run)
VALUES ($1, $2, $3, $4, $5, $6, $7::text::jsonb, $8::text::jsonb, $9, $10, $11)
RETURNING id
"""


async def insert_log(
    conn: AnyConnection | asyncpg.Pool,
    *,
    run_id: uuid.UUID,
    material_id: int | None,
    discrepancy: str,
    action: str,
    actor: str,
    transaction_id: int | None = None,
    discrepancy_id: int | None = None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str | None = None,
    dry_run: bool = False,
) -> int:
    """Append one ``inventory_reconciliation_log`` row; returns its id."""
    return cast(
        int,
        await conn.fetchval(
            INSERT_LOG_SQL,
            run_id,
            material_id,
            transaction_id,
            discrepancy_id,
            discrepancy,
            action,
            json.dumps(before, default=str) if before is not None else None,
            json.dumps(after, default=str) if after is not None else None,
            actor,
            reason,
            dry_run,
        ),
    )


# --- Serialising runs -----------------------------------------------------------------------

RECONCILIATION_LOCK = "inventory:reconciliation"


@asynccontextmanager
async def reconciliation_lock(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """Hold the session advisory lock that serialises reconciliation runs, fixes and
    acceptances across instances (waits for the holder; released on exit or disconnect)."""
    async with advisory_lock(pool, RECONCILIATION_LOCK):
        yield
