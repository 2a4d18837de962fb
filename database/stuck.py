"""SQL of stuck-workflow detection (served by ``ix_requests_active_state_entered`` and
``ix_requests_active_type_state``)."""

from __future__ import annotations

import asyncpg

# $1/$2/$3: per (workflow_type, state) thresholds in seconds; $4: default threshold;
# $5: the smallest threshold (lets the planner use the state_entered_at index);
# $6/$7: optional workflow type / state filters; $8/$9: limit / offset.
STUCK_SQL = """
WITH thresholds (workflow_type, state, threshold_s) AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::float8[])
)
SELECT r.id, r.workflow_type, r.current_state, r.owner_role, r.assignee_id, r.version,
       r.state_entered_at, r.client_id,
       extract(epoch FROM now() - r.state_entered_at)::float8 AS stuck_for_s,
       COALESCE(t.threshold_s, $4) AS threshold_s,
       a.full_name AS assignee_name,
       count(*) OVER () AS total
  FROM service_requests r
  LEFT JOIN thresholds t
         ON t.workflow_type = r.workflow_type AND t.state = r.current_state
  LEFT JOIN users a ON a.id = r.assignee_id
 WHERE r.status = 'active'
   AND r.state_entered_at < now() - make_interval(secs => $5)
   AND r.state_entered_at < now() - make_interval(secs => COALESCE(t.threshold_s, $4))
   AND ($6::text IS NULL OR r.workflow_type = $6)
   AND ($7::text IS NULL OR r.current_state = $7)
 ORDER BY r.state_entered_at, r.id
 LIMIT $8 OFFSET $9
"""


async def find_stuck(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    thresholds: dict[tuple[str, str], float],
    default_threshold_s: float,
    workflow_type: str | None = None,
    state: str | None = None,
    limit: int = 10,
    offset: int = 0,
) -> list[asyncpg.Record]:
    """Active requests in their state longer than its threshold, longest-stuck first.

    Each row has ``stuck_for_s`` and ``threshold_s`` (seconds) and ``total`` (all matches).
    """
    keys = list(thresholds)
    minimum = min([default_threshold_s, *thresholds.values()])
    return await conn.fetch(
        STUCK_SQL,
        [k[0] for k in keys],
        [k[1] for k in keys],
        [float(thresholds[k]) for k in keys],
        float(default_threshold_s),
        float(minimum),
        workflow_type,
        state,
        limit,
        offset,
    )
