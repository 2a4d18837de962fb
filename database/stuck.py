"""SQL of stuck-workflow detection and of the stuck-request alerts.

A request is stuck when it is active and either

- *over its deadline*: it has been in its state longer than that state's threshold
  (``limits``: one row per (workflow type, state) with its threshold in seconds), or
- *held by an unreachable assignee*: its assignee is inactive or has blocked the bot,
  whatever the time.

Both branches are served by indexes (``bench/results/stuck_detection.md`` has the plans):
the first is one range scan of ``ix_requests_active_type_state`` (workflow_type,
current_state, state_entered_at, id) WHERE status = 'active' per (type, state)
pair, through a LATERAL join over the limits; the second reads the few unreachable users
from ``ix_users_unreachable`` and their active requests from ``ix_requests_active_assignee``.

Parameters shared by every query: ``$1``/``$2``/``$3`` the limits as parallel arrays
(workflow types, states, thresholds in seconds), ``$4``/``$5`` optional workflow type /
state filters of the unreachable-assignee branch (the limits arrays are filtered by the
caller already).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import asyncpg

from database.pool import AnyConnection


@dataclass(frozen=True, slots=True)
class Limit:
    """One (workflow type, state) pair and its deadline in seconds."""

    workflow_type: str
    state: str
    threshold_s: float


_LIMITS_CTE = """
limits (workflow_type, state, threshold_s) AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::float8[])
)"""

# Unreachable assignees' active requests (any time in state).
_UNREACHABLE = """
SELECT r.id, r.state_entered_at
  FROM users a
  JOIN service_requests r ON r.assignee_id = a.id AND r.status = 'active'
 WHERE (NOT a.is_active OR a.blocked_bot_at IS NOT NULL)
   AND ($4::text IS NULL OR r.workflow_type = $4)
   AND ($5::text IS NULL OR r.current_state = $5)"""

# One page, longest in state first. Each per-state scan stops after $6 (= offset + limit)
# rows, the page is cut from their union; $7/$8: limit / offset.
PAGE_SQL = f"""
WITH {_LIMITS_CTE},
candidates AS (
    SELECT late.id, late.state_entered_at
      FROM limits t
      CROSS JOIN LATERAL (
          SELECT r.id, r.state_entered_at
            FROM service_requests r
           WHERE r.status = 'active'
             AND r.workflow_type = t.workflow_type
             AND r.current_state = t.state
             AND r.state_entered_at < now() - make_interval(secs => t.threshold_s)
           ORDER BY r.state_entered_at, r.id
           LIMIT $6
      ) late
    UNION
    {_UNREACHABLE}
),
page AS (
    SELECT id, state_entered_at FROM candidates
     ORDER BY state_entered_at, id LIMIT $7 OFFSET $8
)
SELECT r.id, r.workflow_type, r.current_state, r.owner_role, r.assignee_id, r.version,
       r.state_entered_at, r.client_id, r.status,
       extract(epoch FROM now() - r.state_entered_at)::float8 AS stuck_for_s,
       t.threshold_s,
       COALESCE(r.state_entered_at < now() - make_interval(secs => t.threshold_s), FALSE)
           AS over_deadline,
       a.full_name AS assignee_name,
       a.is_active AS assignee_active,
       a.blocked_bot_at IS NOT NULL AS assignee_blocked
  FROM page p
  JOIN service_requests r ON r.id = p.id
  LEFT JOIN limits t ON t.workflow_type = r.workflow_type AND t.state = r.current_state
  LEFT JOIN users a ON a.id = r.assignee_id
 ORDER BY p.state_entered_at, p.id
"""

# How many requests are stuck: the over-deadline ones (index-only counts per state) plus the
# unreachable-assignee ones that are not also over their deadline.
COUNT_SQL = f"""
WITH {_LIMITS_CTE}
SELECT (SELECT COALESCE(sum(n), 0)
          FROM limits t
          CROSS JOIN LATERAL (
              SELECT count(*) AS n
                FROM service_requests r
               WHERE r.status = 'active'
                 AND r.workflow_type = t.workflow_type
                 AND r.current_state = t.state
                 AND r.state_entered_at < now() - make_interval(secs => t.threshold_s)
          ) c)::bigint
     + (SELECT count(*)
          FROM ({_UNREACHABLE}) u
          JOIN service_requests r ON r.id = u.id
          LEFT JOIN limits t ON t.workflow_type = r.workflow_type AND t.state = r.current_state
         WHERE NOT COALESCE(r.state_entered_at < now() - make_interval(secs => t.threshold_s),
                            FALSE))
"""

# Every stuck request as (id, version) for a batch, longest in state first; $6: at most.
TARGETS_SQL = f"""
WITH {_LIMITS_CTE},
candidates AS (
    SELECT late.id, late.state_entered_at, late.version
      FROM limits t
      CROSS JOIN LATERAL (
          SELECT r.id, r.state_entered_at, r.version
            FROM service_requests r
           WHERE r.status = 'active'
             AND r.workflow_type = t.workflow_type
             AND r.current_state = t.state
             AND r.state_entered_at < now() - make_interval(secs => t.threshold_s)
           ORDER BY r.state_entered_at, r.id
           LIMIT $6
      ) late
    UNION
    SELECT r.id, r.state_entered_at, r.version
      FROM users a
      JOIN service_requests r ON r.assignee_id = a.id AND r.status = 'active'
     WHERE (NOT a.is_active OR a.blocked_bot_at IS NOT NULL)
       AND ($4::text IS NULL OR r.workflow_type = $4)
       AND ($5::text IS NULL OR r.current_state = $5)
)
SELECT id, version FROM candidates ORDER BY state_entered_at, id LIMIT $6
"""

# Remember every currently stuck request not alerted yet for its current visit of its state;
# returns the newly remembered ones. Written in the caller's transaction together with the
# digest notifications, so a rollback forgets both. Reads the indexes only (the late branch
# is index-only on ix_requests_active_type_state) and skips the visits already remembered.
ALERT_NEW_SQL = f"""
WITH {_LIMITS_CTE},
late AS (
    SELECT r.id, r.state_entered_at, r.current_state
      FROM limits t
      JOIN service_requests r
        ON r.status = 'active'
       AND r.workflow_type = t.workflow_type
       AND r.current_state = t.state
       AND r.state_entered_at < now() - make_interval(secs => t.threshold_s)
),
unreachable AS (
    SELECT r.id, r.state_entered_at, r.current_state
      FROM users a
      JOIN service_requests r ON r.assignee_id = a.id AND r.status = 'active'
     WHERE (NOT a.is_active OR a.blocked_bot_at IS NOT NULL)
       AND ($4::text IS NULL OR r.workflow_type = $4)
       AND ($5::text IS NULL OR r.current_state = $5)
),
stuck AS (
    SELECT id, state_entered_at, current_state, 'over_deadline' AS reason
      FROM late WHERE id NOT IN (SELECT id FROM unreachable)
    UNION ALL
    SELECT id, state_entered_at, current_state, 'assignee_unreachable' FROM unreachable
)
INSERT INTO stuck_alerts (request_id, state_entered_at, state, reason)
SELECT s.id, s.state_entered_at, s.current_state, s.reason
  FROM stuck s
 WHERE NOT EXISTS (SELECT 1 FROM stuck_alerts a
                    WHERE a.request_id = s.id AND a.state_entered_at = s.state_entered_at)
    ON CONFLICT (request_id, state_entered_at) DO NOTHING
RETURNING request_id, state, reason, state_entered_at
"""

# Alerts whose request has left that visit of its state (moved, completed, cancelled,
# deleted). A correlated scalar subquery, so that each alert is one primary-key probe
# instead of a join against the whole table.
FORGET_LEFT_SQL = """
DELETE FROM stuck_alerts a
 WHERE NOT COALESCE(
       (SELECT r.status = 'active' AND r.state_entered_at = a.state_entered_at
          FROM service_requests r WHERE r.id = a.request_id), FALSE)
"""


def _args(limits: Sequence[Limit], workflow_type: str | None, state: str | None) -> list[object]:
    return [
        [limit.workflow_type for limit in limits],
        [limit.state for limit in limits],
        [float(limit.threshold_s) for limit in limits],
        workflow_type,
        state,
    ]


async def page(
    conn: AnyConnection | asyncpg.Pool,
    limits: Sequence[Limit],
    *,
    workflow_type: str | None = None,
    state: str | None = None,
    limit: int = 10,
    offset: int = 0,
) -> list[asyncpg.Record]:
    """One page of stuck requests, longest in state first.

    ``limits`` must already be restricted to the filters; ``workflow_type``/``state``
    filter the unreachable-assignee branch. Each row: the request's columns, ``stuck_for_s``
    and ``threshold_s`` (seconds; threshold None for a state without a limit),
    ``over_deadline``, ``assignee_name``, ``assignee_active``, ``assignee_blocked``.
    """
    return await conn.fetch(
        PAGE_SQL, *_args(limits, workflow_type, state), offset + limit, limit, offset
    )


async def count(
    conn: AnyConnection | asyncpg.Pool,
    limits: Sequence[Limit],
    *,
    workflow_type: str | None = None,
    state: str | None = None,
) -> int:
    """How many requests are stuck (each counted once, whatever the reasons)."""
    return cast(int, await conn.fetchval(COUNT_SQL, *_args(limits, workflow_type, state)))


async def targets(
    conn: AnyConnection | asyncpg.Pool,
    limits: Sequence[Limit],
    *,
    workflow_type: str | None = None,
    state: str | None = None,
    at_most: int = 1000,
) -> list[tuple[int, int]]:
    """(request id, version) of up to ``at_most`` stuck requests, longest in state first."""
    rows = await conn.fetch(TARGETS_SQL, *_args(limits, workflow_type, state), at_most)
    return [(row["id"], row["version"]) for row in rows]


async def remember_new(conn: AnyConnection, limits: Sequence[Limit]) -> list[asyncpg.Record]:
    """Insert a ``stuck_alerts`` row for every stuck request not alerted for its current
    visit of its state; returns those rows (``request_id``, ``state``, ``reason``,
    ``state_entered_at``), i.e. the newly stuck requests. Call inside a transaction."""
    rows = await conn.fetch(ALERT_NEW_SQL, *_args(limits, None, None))
    return sorted(rows, key=lambda row: (row["state_entered_at"], row["request_id"]))


async def forget_left(conn: AnyConnection) -> int:
    """Delete alert rows of requests that left the alerted visit; returns how many.

    Call inside a transaction: JIT compilation is switched off for it (``SET LOCAL``), as
    the planner's cost for thousands of primary-key probes crosses ``jit_above_cost`` and
    compiling took longer than the probes (bench/results/stuck_detection.md).
    """
    await conn.execute("SET LOCAL jit = off")
    result = await conn.execute(FORGET_LEFT_SQL)
    return int(result.split()[-1])
