"""SQL of ``error_records`` (one row per error group, keyed by its fingerprint) and
``error_occurrences_hourly`` (occurrences per group and hour).

Group life cycle: ``open`` on the first occurrence; ``resolved`` by an admin; a resolved
group that happens again becomes ``regressed`` (and counts on in the same row).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

# Record one occurrence: a new group, or one more occurrence of an existing group. A resolved
# group that happens again becomes 'regressed'. xmax = 0 tells a fresh insert from an update.
# The reference ($1) is only used for a new group; an existing group keeps its own.
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

# One more occurrence in the group's current hour.
COUNT_HOURLY_SQL = """
INSERT INTO error_occurrences_hourly (error_id, hour, category, severity)
VALUES ($1, date_trunc('hour', now()), $2, $3)
ON CONFLICT (error_id, hour) DO UPDATE SET
    occurrences = error_occurrences_hourly.occurrences + 1
"""

# Claim the right to alert for a group: at most once per window (seconds), atomically.
CLAIM_ALERT_SQL = """
UPDATE error_records SET last_alerted_at = now()
 WHERE id = $1
   AND (last_alerted_at IS NULL OR last_alerted_at < now() - make_interval(secs => $2))
RETURNING last_alerted_at
"""

# Resolve a group by reference. last_alerted_at is cleared so that a regression of a
# critical group alerts at once, whatever the alert window.
RESOLVE_SQL = """
UPDATE error_records
   SET status = 'resolved', resolved_at = now(), resolved_by = $2, last_alerted_at = NULL
 WHERE reference = upper($1) AND status <> 'resolved'
RETURNING *
"""

GET_BY_REFERENCE_SQL = "SELECT * FROM error_records WHERE reference = upper(btrim($1))"

# Groups by occurrences in the window ($3 seconds, NULL = all time), most frequent first.
# $4: include resolved groups.
TOP_GROUPS_SQL = """
WITH counted AS (
    SELECT error_id, sum(occurrences) AS window_occurrences
      FROM error_occurrences_hourly
     WHERE $3::double precision IS NULL
        OR hour >= date_trunc('hour', now() - make_interval(secs => $3))
     GROUP BY error_id
)
SELECT e.*, c.window_occurrences
  FROM counted c JOIN error_records e ON e.id = c.error_id
 WHERE $4 OR e.status <> 'resolved'
 ORDER BY c.window_occurrences DESC, e.last_seen_at DESC, e.id
 LIMIT $1 OFFSET $2
"""

# Occurrences and distinct groups by category and severity over the window ($1 seconds).
# Hour buckets: the window is rounded down to the start of its first hour.
COUNTS_SQL = """
SELECT category, severity, count(DISTINCT error_id) AS groups, sum(occurrences) AS occurrences
  FROM error_occurrences_hourly
 WHERE hour >= date_trunc('hour', now() - make_interval(secs => $1))
 GROUP BY category, severity
 ORDER BY occurrences DESC, category, severity
"""

# Occurrences per hour and category over the window ($1 seconds), oldest first (charts).
HOURLY_SQL = """
SELECT hour, category, sum(occurrences) AS occurrences
  FROM error_occurrences_hourly
 WHERE hour >= date_trunc('hour', now() - make_interval(secs => $1))
 GROUP BY hour, category
 ORDER BY hour, category
"""


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """Outcome of recording one occurrence."""

    id: int
    reference: str
    occurrence_count: int
    status: str
    inserted: bool


@dataclass(frozen=True, slots=True)
class CategoryCount:
    """Occurrences of one (category, severity) pair in a window, and how many groups."""

    category: str
    severity: str
    groups: int
    occurrences: int


@dataclass(frozen=True, slots=True)
class HourlyCount:
    """Occurrences of one category in one hour (``hour`` is the hour's start, UTC)."""

    hour: datetime
    category: str
    occurrences: int


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
    """Record one occurrence of an error group (see ``UPSERT_SQL``) and count it in its
    hour. Call inside a transaction.

    Raises:
        asyncpg.UniqueViolationError: ``reference`` is taken by another group (a new group
            only; retry with a fresh reference).
    """
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
    await conn.execute(COUNT_HOURLY_SQL, row["id"], category, severity)
    return UpsertResult(
        row["id"], row["reference"], row["occurrence_count"], row["status"], row["inserted"]
    )


async def claim_alert(conn: asyncpg.Connection, record_id: int, window_s: float) -> datetime | None:
    """The claim time when this caller may alert for the group now (at most once per
    ``window_s`` seconds), else None."""
    return await conn.fetchval(CLAIM_ALERT_SQL, record_id, float(window_s))


async def get_by_reference(
    conn: asyncpg.Connection | asyncpg.Pool, reference: str
) -> asyncpg.Record | None:
    """The group whose reference a user quoted (case and surrounding blanks ignored)."""
    return await conn.fetchrow(GET_BY_REFERENCE_SQL, reference)


async def resolve(
    conn: asyncpg.Connection | asyncpg.Pool, reference: str, resolved_by: int | None
) -> asyncpg.Record | None:
    """Mark the group resolved; returns the updated row, or None when there is no such
    group or it is resolved already."""
    return await conn.fetchrow(RESOLVE_SQL, reference.strip(), resolved_by)


async def top_groups(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    limit: int,
    offset: int = 0,
    window_s: float | None = None,
    include_resolved: bool = False,
) -> list[asyncpg.Record]:
    """Groups ordered by occurrences in the window (``window_occurrences`` column)."""
    return await conn.fetch(
        TOP_GROUPS_SQL,
        limit,
        offset,
        None if window_s is None else float(window_s),
        include_resolved,
    )


async def counts(conn: asyncpg.Connection | asyncpg.Pool, window_s: float) -> list[CategoryCount]:
    """Occurrences and groups by category and severity in the last ``window_s`` seconds."""
    rows = await conn.fetch(COUNTS_SQL, float(window_s))
    return [
        CategoryCount(r["category"], r["severity"], r["groups"], int(r["occurrences"]))
        for r in rows
    ]


async def hourly(conn: asyncpg.Connection | asyncpg.Pool, window_s: float) -> list[HourlyCount]:
    """Occurrences per hour and category in the last ``window_s`` seconds, oldest first."""
    rows = await conn.fetch(HOURLY_SQL, float(window_s))
    return [HourlyCount(r["hour"], r["category"], int(r["occurrences"])) for r in rows]
