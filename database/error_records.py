"""SQL of ``error_records``: one row per error group (fingerprint)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

# Record one occurrence: a new group, or one more occurrence of an existing group. A resolved
# group that happens again becomes 'regressed'. xmax = 0 tells a fresh insert from an update.
UPSERT_SQL = """
INSERT INTO error_records
    (reference, fingerprint, category, severity, error_type, message, location,
     stack_trace, context)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)
ON CONFLICT (fingerprint) DO UPDATE SET
    occurrence_count = error_records.occurrence_count + 1,
    last_seen_at = now(),
    message = EXCLUDED.message,
    stack_trace = EXCLUDED.stack_trace,
    context = EXCLUDED.context,
    severity = EXCLUDED.severity,
    status = CASE WHEN error_records.status = 'resolved' THEN 'regressed'
                  ELSE error_records.status END
RETURNING id, reference, occurrence_count, status, (xmax = 0) AS inserted
"""

# Claim the right to alert for a group: at most once per window (seconds), atomically.
CLAIM_ALERT_SQL = """
UPDATE error_records SET last_alerted_at = now()
 WHERE id = $1
   AND (last_alerted_at IS NULL OR last_alerted_at < now() - make_interval(secs => $2))
RETURNING last_alerted_at
"""


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """Outcome of recording one occurrence."""

    id: int
    reference: str
    occurrence_count: int
    status: str
    inserted: bool


async def upsert(
    conn: asyncpg.Connection,
    *,
    reference: str,
    fingerprint: str,
    category: str,
    severity: str,
    error_type: str,
    message: str,
    location: str | None,
    stack_trace: str | None,
    context: dict[str, Any],
) -> UpsertResult:
    """Record one occurrence of an error group (see ``UPSERT_SQL``)."""
    row = await conn.fetchrow(
        UPSERT_SQL,
        reference,
        fingerprint,
        category,
        severity,
        error_type,
        message,
        location,
        stack_trace,
        context,
    )
    assert row is not None
    return UpsertResult(
        row["id"], row["reference"], row["occurrence_count"], row["status"], row["inserted"]
    )


async def claim_alert(conn: asyncpg.Connection, record_id: int, window_s: float) -> bool:
    """True when this caller may alert for the group now (once per ``window_s`` seconds)."""
    return await conn.fetchval(CLAIM_ALERT_SQL, record_id, float(window_s)) is not None


async def get_by_reference(conn: asyncpg.Connection, reference: str) -> asyncpg.Record | None:
    """The group whose reference a user quoted (case-insensitive), or None."""
    return await conn.fetchrow(
        "SELECT * FROM error_records WHERE reference = upper($1)", reference.strip()
    )
