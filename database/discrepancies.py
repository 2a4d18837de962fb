"""SQL of ``inventory_discrepancies``: open discrepancies, their acceptances and closing.

Detection and the fix path are ``database/inventory.py``'s."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

import asyncpg

from database.pool import AnyConnection

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
