"""SQL behind the admin dashboard: the health summary and snapshots, and the error
statistics (read from the hourly rollup ``error_hourly_counts``
and from ``error_records``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import asyncpg

from database.pool import AnyConnection

Db = AnyConnection | asyncpg.Pool


# --- Health ---------------------------------------------------------------------------------
async def health_summary(
    conn: Db, stuck_threshold_s: float, stuck_thresholds: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """``get_system_health_summary()``: the live figures in one JSON document.

    ``stuck_thresholds``: seconds per ``"workflow_type:state"``; others use
    ``stuck_threshold_s``.
    """
    return cast(
        dict[str, Any],
        await conn.fetchval(
            "SELECT get_system_health_summary($1, $2::jsonb)",
            float(stuck_threshold_s),
            {key: float(value) for key, value in (stuck_thresholds or {}).items()},
        ),
    )


async def lock_snapshots(conn: AnyConnection) -> None:
    """One snapshot at a time across instances, until the end of the transaction."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('health-snapshot'))")


async def insert_snapshot(conn: Db, status: str, metrics: dict[str, Any]) -> int:
    """Store one snapshot; returns its id."""
    snapshot_id: int = await conn.fetchval(
        "INSERT INTO system_health_snapshots (status, metrics) VALUES ($1, $2::jsonb) RETURNING id",
        status,
        metrics,
    )
    return snapshot_id


async def latest_snapshot(conn: Db) -> asyncpg.Record | None:
    """The most recent snapshot, or None (``ix_health_snapshots_created``)."""
    return await conn.fetchrow(
        "SELECT id, status, metrics, created_at FROM system_health_snapshots "
        "ORDER BY created_at DESC, id DESC LIMIT 1"
    )


# The newest snapshot at least $1 seconds old; when none is that old, the oldest one.
BASELINE_SQL = """
(SELECT id, status, metrics, created_at, 0 AS pick FROM system_health_snapshots
  WHERE created_at <= now() - make_interval(secs => $1)
  ORDER BY created_at DESC LIMIT 1)
UNION ALL
(SELECT id, status, metrics, created_at, 1 FROM system_health_snapshots
  ORDER BY created_at LIMIT 1)
ORDER BY pick LIMIT 1
"""


async def baseline_snapshot(conn: Db, age_s: float) -> asyncpg.Record | None:
    """The snapshot to compare with over ``age_s`` seconds (see ``BASELINE_SQL``)."""
    return await conn.fetchrow(BASELINE_SQL, float(age_s))


async def cleanup(conn: Db, retention_days: int) -> int:
    """``cleanup_old_dashboard_data``: rows removed (error rollup, admin alerts, ended mutes)."""
    return cast(int, await conn.fetchval("SELECT cleanup_old_dashboard_data($1)", retention_days))


async def notification_counts(conn: Db) -> dict[str, int]:
    """Outbox rows by status (the metrics gauges)."""
    rows = await conn.fetch(
        "SELECT status, count(*) AS n FROM pending_notifications GROUP BY status"
    )
    return {row["status"]: row["n"] for row in rows}


# --- Error statistics -----------------------------------------------------------------------
# Occurrences and groups by category and severity since $1 hours ago (whole UTC hours: the
# bucket containing that moment is included). Occurrences: the rollup (an index-only scan
# of one hour range). Groups: a group had an occurrence in the window exactly when its
# last_seen_at is in it, so they are counted on error_records in one scan of the table (one
# row per group; last_seen_at is not indexed so that the counter updates stay HOT). A group
# whose severity changed counts under its current severity.
ERROR_COUNTS_SQL = """
WITH bounds AS (
    SELECT date_trunc('hour', now() - make_interval(hours => $1), 'UTC') AS since
), occurrences AS (
    SELECT h.category, h.severity, sum(h.occurrences)::bigint AS occurrences
      FROM error_hourly_counts h, bounds
     WHERE h.hour >= bounds.since
     GROUP BY h.category, h.severity
), groups AS (
    SELECT e.category, e.severity, count(*) AS groups
      FROM error_records e, bounds
     WHERE e.last_seen_at >= bounds.since
     GROUP BY e.category, e.severity
)
SELECT o.category, o.severity, COALESCE(g.groups, 0) AS groups, o.occurrences
  FROM occurrences o LEFT JOIN groups g USING (category, severity)
 ORDER BY o.occurrences DESC, o.category, o.severity
"""

# Occurrences per UTC hour and category over the last $1 hours, for the chart.
ERRORS_PER_HOUR_SQL = """
SELECT hour, category, sum(occurrences)::bigint AS occurrences
  FROM error_hourly_counts
 WHERE hour >= date_trunc('hour', now() - make_interval(hours => $1), 'UTC')
 GROUP BY hour, category
 ORDER BY hour, category
"""

# Open (and regressed) groups by occurrence count (a scan of the table, one row per group).
TOP_GROUPS_SQL = """
SELECT id, reference, category, severity, error_type, occurrence_count, last_seen_at, status
  FROM error_records
 WHERE status <> 'resolved'
 ORDER BY occurrence_count DESC, id
 LIMIT $1 OFFSET $2
"""


async def error_counts(conn: Db, hours: int) -> list[asyncpg.Record]:
    """Rows (category, severity, groups, occurrences) for the last ``hours`` hours."""
    return await conn.fetch(ERROR_COUNTS_SQL, hours)


async def errors_per_hour(conn: Db, hours: int) -> list[asyncpg.Record]:
    """Rows (hour, category, occurrences) for the last ``hours`` hours, oldest first."""
    return await conn.fetch(ERRORS_PER_HOUR_SQL, hours)


async def top_groups(conn: Db, limit: int, offset: int = 0) -> list[asyncpg.Record]:
    """Unresolved error groups, most frequent first."""
    return await conn.fetch(TOP_GROUPS_SQL, limit, offset)


async def unresolved_group_count(conn: Db, cap: int) -> int:
    """How many groups are open or regressed, counting at most ``cap + 1`` (the screen
    shows "more than cap"; an exact count of 300,000 groups costs ~150 ms)."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM (SELECT 1 FROM error_records WHERE status <> 'resolved' LIMIT $1) s",
        cap + 1,
    )
    return count


async def error_group(conn: Db, record_id: int) -> asyncpg.Record | None:
    """One error group by id, or None."""
    return await conn.fetchrow("SELECT * FROM error_records WHERE id = $1", record_id)
