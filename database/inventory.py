"""SQL of inventory reconciliation and of stock movements (``materials`` + the ledger).

The ledger ``inventory_transactions`` is the source of truth: ``materials.balance`` must equal
the sum of the material's ledger quantities. Detection queries are set-based: the
material-level check takes a material id range so that a run can report progress chunk by
chunk, orphans and duplicates are one pass each; the fix path runs the same checks for one
material while holding that material's row lock. Plans of the detection queries:
``docs/inventory-reconciliation.md``.

Concurrency contract (see ``record_movement``): every change of ``materials.balance`` is a
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
from recovery.exceptions import InsufficientStockError, NotFoundError

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


# --- Stock movements ------------------------------------------------------------------------

INSERT_MOVEMENT_SQL = """
INSERT INTO inventory_transactions
    (material_id, kind, quantity, request_id, actor_id, idempotency_key, external_reference,
     note)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id
"""
EXISTING_MOVEMENT_SQL = """
SELECT id, material_id, quantity FROM inventory_transactions WHERE idempotency_key = $1
"""
# Guarded relative update: never takes the balance below zero.
GUARDED_MOVE_SQL = """
UPDATE materials SET balance = balance + $2, updated_at = now()
 WHERE id = $1 AND balance + $2 >= 0
RETURNING balance
"""
MOVEMENT_KINDS = ("receipt", "issue", "return", "adjustment")


async def record_movement(
    conn: AnyConnection,
    *,
    material_id: int,
    kind: str,
    quantity: int,
    idempotency_key: str,
    request_id: int | None = None,
    actor_id: int | None = None,
    external_reference: str | None = None,
    note: str | None = None,
) -> tuple[int, bool]:
    """One stock movement: the ledger row and the relative balance update in one transaction.

    ``quantity`` is signed (receipt/return > 0, issue < 0). A repeated ``idempotency_key``
    is not counted twice: the existing row's id comes back with ``False``.

    Returns:
        (ledger row id, True when this call applied the movement).

    Raises:
        InsufficientStockError: the balance would go below zero.
        NotFoundError: the material does not exist.
        ValueError: unknown kind, or a sign that does not fit the kind.
    """
    if kind not in MOVEMENT_KINDS or quantity == 0:
        raise ValueError(f"bad movement {kind} {quantity}")
    if (kind in ("receipt", "return") and quantity < 0) or (kind == "issue" and quantity > 0):
        raise ValueError(f"{kind} cannot have quantity {quantity}")
    async with conn.transaction():
        try:
            row_id = await conn.fetchval(
                INSERT_MOVEMENT_SQL,
                material_id,
                kind,
                quantity,
                request_id,
                actor_id,
                idempotency_key,
                external_reference,
                note,
            )
        except asyncpg.ForeignKeyViolationError as exc:  # SQLSTATE 23503: no such material
            raise NotFoundError("material", material_id) from exc
        if row_id is None:
            existing = await conn.fetchrow(EXISTING_MOVEMENT_SQL, idempotency_key)
            assert existing is not None  # the row that ON CONFLICT met
            return int(existing["id"]), False
        balance = await conn.fetchval(GUARDED_MOVE_SQL, material_id, quantity)
        if balance is None:
            available = await conn.fetchval(
                "SELECT balance FROM materials WHERE id = $1", material_id
            )
            raise InsufficientStockError(material_id, -quantity, available)
        return int(row_id), True


# --- Open discrepancies and acceptances ----------------------------------------------------

DISCREPANCY_COLUMNS = """
d.id, d.fingerprint, d.kind, d.material_id, d.request_id, d.transaction_id, d.amount,
d.balance, d.ledger_sum, d.details, d.status, d.first_seen_at, d.last_seen_at, d.closed_at,
d.closed_by, d.reason, m.sku, m.name AS material_name
"""

ACCEPTED_SQL = """
SELECT fingerprint, kind, amount FROM inventory_discrepancies
 WHERE status = 'accepted' AND fingerprint = ANY ($1::text[])
"""

# Record the open discrepancies of a run: insert new ones, refresh the ones already open.
UPSERT_OPEN_SQL = """
INSERT INTO inventory_discrepancies
    (fingerprint, kind, material_id, request_id, transaction_id, amount, balance, ledger_sum,
     details)
SELECT f, k, m, r, t, a, b, l, d::jsonb
  FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
              $7::bigint[], $8::bigint[], $9::text[]) AS u (f, k, m, r, t, a, b, l, d)
ON CONFLICT (fingerprint) WHERE status = 'open' DO UPDATE
   SET kind = EXCLUDED.kind, request_id = EXCLUDED.request_id,
       transaction_id = EXCLUDED.transaction_id, amount = EXCLUDED.amount,
       balance = EXCLUDED.balance, ledger_sum = EXCLUDED.ledger_sum,
       details = EXCLUDED.details, last_seen_at = now()
RETURNING id, fingerprint
"""

# Open rows a run no longer finds: they went away by themselves (or by another fix).
RESOLVE_GONE_SQL = """
UPDATE inventory_discrepancies
   SET status = 'resolved', closed_at = now(), closed_by = $2, reason = 'no longer detected'
 WHERE status = 'open' AND fingerprint <> ALL ($1::text[])
   AND ($3::bigint IS NULL OR material_id = $3)
RETURNING id
"""

CLOSE_OPEN_SQL = """
UPDATE inventory_discrepancies
   SET status = $2, kind = $3, amount = $4, balance = $5, ledger_sum = $6, closed_at = now(),
       closed_by = $7, reason = $8, last_seen_at = now()
 WHERE fingerprint = $1 AND status = 'open'
RETURNING id
"""
INSERT_CLOSED_SQL = """
INSERT INTO inventory_discrepancies
    (fingerprint, kind, material_id, request_id, transaction_id, amount, balance, ledger_sum,
     details, status, closed_at, closed_by, reason)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::jsonb, $10, now(), $11, $12)
RETURNING id
"""

GET_DISCREPANCY_SQL = f"""
SELECT {DISCREPANCY_COLUMNS}
  FROM inventory_discrepancies d JOIN materials m ON m.id = d.material_id
 WHERE d.id = $1
"""
LOCK_DISCREPANCY_SQL = "SELECT id, status FROM inventory_discrepancies WHERE id = $1 FOR UPDATE"

LIST_OPEN_SQL = f"""
SELECT {DISCREPANCY_COLUMNS}, count(*) OVER () AS total
  FROM inventory_discrepancies d JOIN materials m ON m.id = d.material_id
 WHERE d.status = 'open' AND ($1::text IS NULL OR d.kind = $1)
 ORDER BY d.id
 LIMIT $2 OFFSET $3
"""
OPEN_COUNTS_SQL = """
SELECT kind, count(*) AS n FROM inventory_discrepancies WHERE status = 'open' GROUP BY kind
"""
ACCEPT_SQL = """
UPDATE inventory_discrepancies
   SET status = 'accepted', closed_at = now(), closed_by = $2, reason = $3
 WHERE id = $1 AND status = 'open'
RETURNING id
"""


async def accepted(
    conn: AnyConnection | asyncpg.Pool, fingerprints: Sequence[str]
) -> set[tuple[str, str, int]]:
    """(fingerprint, kind, amount) of the accepted discrepancies among ``fingerprints``."""
    if not fingerprints:
        return set()
    rows = await conn.fetch(ACCEPTED_SQL, list(fingerprints))
    return {(row["fingerprint"], row["kind"], int(row["amount"])) for row in rows}


async def upsert_open(
    conn: AnyConnection | asyncpg.Pool, rows: Sequence[dict[str, Any]]
) -> dict[str, int]:
    """Insert or refresh open discrepancies (keys: fingerprint, kind, material_id,
    request_id, transaction_id, amount, balance, ledger_sum, details); returns
    fingerprint -> id."""
    if not rows:
        return {}
    records = await conn.fetch(
        UPSERT_OPEN_SQL,
        [r["fingerprint"] for r in rows],
        [r["kind"] for r in rows],
        [r["material_id"] for r in rows],
        [r["request_id"] for r in rows],
        [r["transaction_id"] for r in rows],
        [r["amount"] for r in rows],
        [r["balance"] for r in rows],
        [r["ledger_sum"] for r in rows],
        [json.dumps(r["details"], default=str) for r in rows],
    )
    return {rec["fingerprint"]: rec["id"] for rec in records}


async def resolve_gone(
    conn: AnyConnection | asyncpg.Pool,
    present: Sequence[str],
    actor: str,
    material_id: int | None = None,
) -> int:
    """Close as resolved the open rows whose fingerprint is not in ``present`` (only those of
    ``material_id`` when given); returns how many."""
    rows = await conn.fetch(RESOLVE_GONE_SQL, list(present), actor, material_id)
    return len(rows)


async def close_discrepancy(
    conn: AnyConnection,
    row: dict[str, Any],
    *,
    status: str,
    actor: str,
    reason: str | None,
) -> int:
    """Close the open row of ``row["fingerprint"]`` with ``status`` (inserting it closed when
    no run recorded it yet); returns its id."""
    closed = await conn.fetchval(
        CLOSE_OPEN_SQL,
        row["fingerprint"],
        status,
        row["kind"],
        row["amount"],
        row["balance"],
        row["ledger_sum"],
        actor,
        reason,
    )
    if closed is not None:
        return int(closed)
    return int(
        await conn.fetchval(
            INSERT_CLOSED_SQL,
            row["fingerprint"],
            row["kind"],
            row["material_id"],
            row["request_id"],
            row["transaction_id"],
            row["amount"],
            row["balance"],
            row["ledger_sum"],
            json.dumps(row["details"], default=str),
            status,
            actor,
            reason,
        )
    )


async def get_discrepancy(
    conn: AnyConnection | asyncpg.Pool, discrepancy_id: int
) -> asyncpg.Record | None:
    """One discrepancy row with the material's sku and name, or None."""
    return await conn.fetchrow(GET_DISCREPANCY_SQL, discrepancy_id)


async def lock_discrepancy(conn: AnyConnection, discrepancy_id: int) -> str | None:
    """Lock the discrepancy row in the caller's transaction; returns its status or None."""
    row = await conn.fetchrow(LOCK_DISCREPANCY_SQL, discrepancy_id)
    return None if row is None else str(row["status"])


async def list_open(
    conn: AnyConnection | asyncpg.Pool,
    *,
    kind: str | None = None,
    limit: int = 10,
    offset: int = 0,
) -> list[asyncpg.Record]:
    """Open discrepancies, oldest first; each row carries ``total`` (all matches)."""
    return await conn.fetch(LIST_OPEN_SQL, kind, limit, offset)


async def open_counts(conn: AnyConnection | asyncpg.Pool) -> dict[str, int]:
    """Open discrepancies by kind."""
    return {row["kind"]: int(row["n"]) for row in await conn.fetch(OPEN_COUNTS_SQL)}


async def accept(conn: AnyConnection, discrepancy_id: int, actor: str, reason: str) -> int | None:
    """Mark an open discrepancy accepted; None when it is not open."""
    return cast(int | None, await conn.fetchval(ACCEPT_SQL, discrepancy_id, actor, reason))


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
