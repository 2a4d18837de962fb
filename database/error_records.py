"""SQL of ``error_records``: one row per error group, keyed by its fingerprint.

Group life cycle: ``open`` on the first occurrence; ``resolved`` by an admin; a resolved
group that happens again becomes ``regressed`` (and counts on in the same row).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import asyncpg

from database.pool import AnyConnection

# Record a batch of occurrences, coalesced by fingerprint in the process, in one statement:
# one counter update per group, the hourly rollup of the same occurrences, and an alias for
# each reference a user was shown that is not the group's stored one.
#
# claim: the writer's flush sequence number ($16 writer, $17 seq) moves forward only once,
#   so a batch retried after a lost answer (its COMMIT may have happened) is not counted
#   twice: the retry finds its number taken and changes nothing (zero rows returned).
#   $18 false: asynchronous commit for this statement (set_config(..., true) is local to
#   its transaction; PostgreSQL reads the setting at commit): a storm does not wait for
#   the WAL flush; a server crash can lose the last moments of counts, never corrupt them
#   ("Asynchronous Commit" in the PostgreSQL manual).
# input: one row per group ($1..$12 arrays of the same length, fingerprints unique);
#   stack_trace NULL: no new sample, the stored message, trace and context stay as they are
#   (the row is then changed only in columns no index covers: a HOT update).
# upserted: rows in fingerprint order (two writers lock shared groups in the same order).
#   A new group whose shown reference is another group's gets 'X-<fingerprint>' (unique).
#   A resolved group with an occurrence after its resolution becomes 'regressed'.
# rollup: ($13..$15: fingerprint, UTC hour, occurrences; (fingerprint, hour) unique).
RECORD_BATCH_SQL = """
WITH claim AS (
    INSERT INTO error_flush_marks AS m (writer, seq)
    SELECT $16::uuid, $17::bigint
     WHERE set_config('synchronous_commit',
                      CASE WHEN $18::boolean THEN current_setting('synchronous_commit')
                           ELSE 'off' END,
                      true) IS NOT NULL
    ON CONFLICT (writer) DO UPDATE SET seq = EXCLUDED.seq, flushed_at = now()
     WHERE m.seq < EXCLUDED.seq
    RETURNING 1
), input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::text[], $8::text[], $9::text[], $10::bigint[],
                         $11::timestamptz[], $12::timestamptz[])
        AS i (fingerprint, reference, category, severity, error_type, message, location,
              stack_trace, context, n, first_seen_at, last_seen_at)
     WHERE EXISTS (SELECT 1 FROM claim)
), upserted AS (
    INSERT INTO error_records AS e
        (reference, fingerprint, category, severity, error_type, message, location,
         stack_trace, context, occurrence_count, first_seen_at, last_seen_at)
    SELECT CASE WHEN EXISTS (SELECT 1 FROM error_records x
                              WHERE x.reference = i.reference
                                AND x.fingerprint <> i.fingerprint)
                  OR EXISTS (SELECT 1 FROM error_reference_aliases a
                              WHERE a.reference = i.reference)
                THEN 'X-' || i.fingerprint ELSE i.reference END,
           i.fingerprint, i.category, i.severity, i.error_type, i.message, i.location,
           i.stack_trace, coalesce(i.context, '{}')::jsonb, i.n, i.first_seen_at,
           i.last_seen_at
      FROM input i
     ORDER BY i.fingerprint
    ON CONFLICT (fingerprint) DO UPDATE SET
        occurrence_count = e.occurrence_count + EXCLUDED.occurrence_count,
        first_seen_at = least(e.first_seen_at, EXCLUDED.first_seen_at),
        last_seen_at = greatest(e.last_seen_at, EXCLUDED.last_seen_at),
        severity = EXCLUDED.severity,
        status = CASE WHEN e.status = 'resolved' AND EXCLUDED.last_seen_at > e.resolved_at
                      THEN 'regressed' ELSE e.status END,
        message = CASE WHEN EXCLUDED.stack_trace IS NULL THEN e.message
                       ELSE EXCLUDED.message END,
        location = CASE WHEN EXCLUDED.stack_trace IS NULL THEN e.location
                        ELSE EXCLUDED.location END,
        context = CASE WHEN EXCLUDED.stack_trace IS NULL THEN e.context
                       ELSE EXCLUDED.context END,
        stack_trace = coalesce(EXCLUDED.stack_trace, e.stack_trace)
    RETURNING e.id, e.fingerprint, e.reference, e.category, e.severity,
              e.occurrence_count, e.status
), rollup AS (
    INSERT INTO error_hourly_counts AS h (hour, record_id, category, severity, occurrences)
    SELECT r.hour, u.id, u.category, u.severity, r.n
      FROM unnest($13::text[], $14::timestamptz[], $15::bigint[]) AS r (fingerprint, hour, n)
      JOIN upserted u USING (fingerprint)
     ORDER BY r.hour, u.id
    ON CONFLICT (hour, record_id) DO UPDATE
        SET occurrences = h.occurrences + EXCLUDED.occurrences, severity = EXCLUDED.severity
), aliases AS (
    INSERT INTO error_reference_aliases (reference, record_id)
    SELECT i.reference, u.id
      FROM input i JOIN upserted u USING (fingerprint)
     WHERE u.reference <> i.reference
       AND NOT EXISTS (SELECT 1 FROM error_records x WHERE x.reference = i.reference)
    ON CONFLICT (reference) DO NOTHING
)
SELECT id, fingerprint, reference, occurrence_count, status FROM upserted
"""

# Flush marks of writers that have not flushed for a day (a process that ended).
PRUNE_FLUSH_MARKS_SQL = "DELETE FROM error_flush_marks WHERE flushed_at < now() - interval '1 day'"

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

# By the stored reference, else by an alias (a reference shown before the group's row
# told its stored one: error_reference_aliases).
GET_BY_REFERENCE_SQL = """
SELECT e.* FROM error_records e WHERE e.reference = upper(btrim($1))
UNION ALL
SELECT e.* FROM error_reference_aliases a JOIN error_records e ON e.id = a.record_id
 WHERE a.reference = upper(btrim($1))
LIMIT 1
"""

# Groups by occurrence count, most frequent first; $3: only groups seen in the last $3
# seconds (NULL = any time); $4: include resolved groups. A scan of the table (one row per
# group; occurrence_count and last_seen_at are deliberately not indexed, so that the
# counter updates stay HOT).
TOP_GROUPS_SQL = """
SELECT * FROM error_records
 WHERE ($4 OR status <> 'resolved')
   AND ($3::double precision IS NULL OR last_seen_at > now() - make_interval(secs => $3))
 ORDER BY occurrence_count DESC, last_seen_at DESC, id
 LIMIT $1 OFFSET $2
"""

# Groups seen in the last $1 seconds by category and severity, with their running totals
# (a scan of the table: one row per group).
GROUP_COUNTS_SQL = """
SELECT category, severity, count(*) AS groups, sum(occurrence_count) AS total_occurrences
  FROM error_records
 WHERE last_seen_at > now() - make_interval(secs => $1)
 GROUP BY category, severity
 ORDER BY total_occurrences DESC, category, severity
"""


@dataclass(frozen=True, slots=True)
class StoredGroup:
    """A group as a batch left it: its row id, stored reference and running count."""

    id: int
    fingerprint: str
    reference: str
    occurrence_count: int
    status: str


@dataclass(frozen=True, slots=True)
class GroupOccurrences:
    """Occurrences of one group to add in a batch.

    ``stack_trace`` None: no new sample (``message``, ``location``, ``context`` are then
    ignored for an existing group). ``hours``: occurrences per UTC hour (their sum is
    ``n``). Times are timezone-aware.
    """

    fingerprint: str
    reference: str
    category: str
    severity: str
    error_type: str
    message: str
    location: str | None
    stack_trace: str | None
    context_json: str | None
    n: int
    first_seen_at: datetime
    last_seen_at: datetime
    hours: dict[datetime, int]


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


async def record_batch(
    conn: AnyConnection | asyncpg.Pool,
    groups: list[GroupOccurrences],
    *,
    writer: uuid.UUID,
    seq: int,
    durable: bool = False,
) -> list[StoredGroup] | None:
    """Add the occurrences of ``groups`` (fingerprints unique) in one statement
    (``RECORD_BATCH_SQL``): counters, hourly rollup and reference aliases together.

    ``writer``/``seq``: this batch's flush number; a batch is applied at most once per
    number, and numbers of one writer must grow. Returns the groups as stored, or None
    when ``seq`` was applied already (a retry of a batch whose answer was lost).
    ``durable=False`` commits asynchronously.
    """
    rows = await conn.fetch(
        RECORD_BATCH_SQL,
        [g.fingerprint for g in groups],
        [g.reference for g in groups],
        [g.category for g in groups],
        [g.severity for g in groups],
        [g.error_type for g in groups],
        [g.message for g in groups],
        [g.location for g in groups],
        [g.stack_trace for g in groups],
        [g.context_json for g in groups],
        [g.n for g in groups],
        [g.first_seen_at for g in groups],
        [g.last_seen_at for g in groups],
        [g.fingerprint for g in groups for _ in g.hours],
        [hour for g in groups for hour in g.hours],
        [n for g in groups for n in g.hours.values()],
        writer,
        seq,
        durable,
    )
    if not rows and groups:
        return None
    return [
        StoredGroup(r["id"], r["fingerprint"], r["reference"], r["occurrence_count"], r["status"])
        for r in rows
    ]


async def prune_flush_marks(conn: AnyConnection | asyncpg.Pool) -> int:
    """Delete the flush marks of writers silent for a day; returns how many."""
    status = await conn.execute(PRUNE_FLUSH_MARKS_SQL)
    return int(status.split()[-1])


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
