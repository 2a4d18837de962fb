"""SQL of ``error_records``: one row per error group, keyed by its fingerprint.

Group life cycle: ``open`` on the first occurrence; ``resolved`` by an admin; a resolved
group that happens again becomes ``regressed`` (and counts on in the same row).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import asyncpg

from database.pool import AnyConnection

# Record one occurrence: a new group, or one more occurrence of an existing group. A resolved
# group that happens again becomes 'regressed'. xmax = 0 tells a fresh insert from an update.
# The reference ($1) is only used for a new group; an existing group keeps its own.
# $10 false: asynchronous commit for this transaction (set_config(..., true) is local to it;
# PostgreSQL reads the setting when it commits): the caller does not wait for the WAL flush.
# A server crash can lose the last moments of error records (never corrupt them); an error
# storm is not slowed down by the disk. See "Asynchronous Commit" in the PostgreSQL manual.
UPSERT_SQL = """
INSERT INTO error_records
    (reference, fingerprint, category, severity, error_type, message, location,
     stack_trace, context)
SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb
 WHERE set_config('synchronous_commit',
                  CASE WHEN $10::boolean THEN current_setting('synchronous_commit')
                       ELSE 'off' END,
                  true) IS NOT NULL
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

# Resolve a group by reference. last_alerted_at is cleared so that a regression of a
# critical group alerts at once, whatever the alert window.
RESOLVE_SQL = """
UPDATE error_records
   SET status = 'resolved', resolved_at = now(), resolved_by = $2, last_alerted_at = NULL
 WHERE reference = upper($1) AND status <> 'resolved'
RETURNING *
"""

GET_BY_REFERENCE_SQL = "SELECT * FROM error_records WHERE reference = upper(btrim($1))"

# Groups by occurrence count, most frequent first; $3: only groups seen in the last $3
# seconds (NULL = any time); $4: include resolved groups. Unresolved and all-time: the
# partial index ix_error_records_open_count.
TOP_GROUPS_SQL = """
SELECT * FROM error_records
 WHERE ($4 OR status <> 'resolved')
   AND ($3::double precision IS NULL OR last_seen_at > now() - make_interval(secs => $3))
 ORDER BY occurrence_count DESC, last_seen_at DESC, id
 LIMIT $1 OFFSET $2
"""

# Groups seen in the last $1 seconds by category and severity, with their running totals
# (ix_error_records_category_last_seen).
GROUP_COUNTS_SQL = """
SELECT category, severity, count(*) AS groups, sum(occurrence_count) AS total_occurrences
  FROM error_records
 WHERE last_seen_at > now() - make_interval(secs => $1)
 GROUP BY category, severity
 ORDER BY total_occurrences DESC, category, severity
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
class GroupCount:
    """Error groups of one (category, severity) seen in a window.

    ``total_occurrences`` is those groups' running total (since each group's first
    occurrence), not the occurrences inside the window: those need an hourly rollup.
    """

    category: str
    severity: str
    groups: int
    total_occurrences: int


async def upsert(
    conn: AnyConnection,
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
    durable: bool = True,
) -> UpsertResult:
    """Record one occurrence of an error group (see ``UPSERT_SQL``).

    ``durable=False`` commits asynchronously (use it when the statement is its own
    transaction and nothing else is written with it).

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
        durable,
    )
    assert row is not None
    return UpsertResult(
        row["id"], row["reference"], row["occurrence_count"], row["status"], row["inserted"]
    )


async def claim_alert(conn: AnyConnection, record_id: int, window_s: float) -> datetime | None:
    """The claim time when this caller may alert for the group now (at most once per
    ``window_s`` seconds), else None."""
    return cast(datetime | None, await conn.fetchval(CLAIM_ALERT_SQL, record_id, float(window_s)))


async def get_by_reference(
    conn: AnyConnection | asyncpg.Pool, reference: str
) -> asyncpg.Record | None:
    """The group whose reference a user quoted (case and surrounding blanks ignored)."""
    return await conn.fetchrow(GET_BY_REFERENCE_SQL, reference)


async def resolve(
    conn: AnyConnection | asyncpg.Pool, reference: str, resolved_by: int | None
) -> asyncpg.Record | None:
    """Mark the group resolved; returns the updated row, or None when there is no such
    group or it is resolved already."""
    return await conn.fetchrow(RESOLVE_SQL, reference.strip(), resolved_by)


async def top_groups(
    conn: AnyConnection | asyncpg.Pool,
    *,
    limit: int,
    offset: int = 0,
    window_s: float | None = None,
    include_resolved: bool = False,
) -> list[asyncpg.Record]:
    """Groups by occurrence count (see ``TOP_GROUPS_SQL``)."""
    return await conn.fetch(
        TOP_GROUPS_SQL,
        limit,
        offset,
        None if window_s is None else float(window_s),
        include_resolved,
    )


async def group_counts(conn: AnyConnection | asyncpg.Pool, window_s: float) -> list[GroupCount]:
    """Groups seen in the last ``window_s`` seconds by category and severity."""
    rows = await conn.fetch(GROUP_COUNTS_SQL, float(window_s))
    return [
        GroupCount(r["category"], r["severity"], r["groups"], int(r["total_occurrences"]))
        for r in rows
    ]
