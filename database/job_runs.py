"""SQL of periodic job bookkeeping (``job_runs``): one run per job and interval slot.

Call ``abandon_orphans`` and ``begin`` only while holding the job's advisory lock
(``database.locks``): holding it proves that no live instance runs the job, so a row still
'running' belongs to an instance that died.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from database.pool import AnyConnection

Conn = AnyConnection | asyncpg.Pool

# Runs left 'running' by a dead instance (only the advisory lock holder may call this).
ABANDON_ORPHANS_SQL = """
UPDATE job_runs
   SET status = 'abandoned', finished_at = now(),
       duration_s = extract(epoch FROM now() - started_at),
       error = 'instance ' || instance_id || ' stopped before finishing'
 WHERE job_name = $1 AND status = 'running'
RETURNING id, instance_id, slot_start
"""

# Start a run for the current slot (epoch seconds floored to the interval $2, database clock)
# unless the slot already has a run: the partial unique index ux_job_runs_slot arbitrates.
BEGIN_SQL = """
INSERT INTO job_runs (job_name, slot_start, interval_s, instance_id)
VALUES ($1, to_timestamp(floor(extract(epoch FROM now()) / $2) * $2), $2, $3)
ON CONFLICT (job_name, slot_start) WHERE status IN ('running', 'ok', 'failed') DO NOTHING
RETURNING id, slot_start
"""

# Record how a run ended: 'ok', 'failed' or 'cancelled' (shutdown; the slot may run again).
FINISH_SQL = """
UPDATE job_runs
   SET status = $2, result = $3::jsonb, error = $4, finished_at = now(),
       duration_s = extract(epoch FROM now() - started_at)
 WHERE id = $1 AND status = 'running'
"""

# Retention: finished runs older than $1 days.
DELETE_OLD_SQL = """
DELETE FROM job_runs
 WHERE started_at < now() - make_interval(days => $1) AND status <> 'running'
"""

# Latest runs, newest first (the dashboard and the tests read them).
RECENT_SQL = """
SELECT id, job_name, slot_start, interval_s, instance_id, status, result, error,
       started_at, finished_at, duration_s
  FROM job_runs
 WHERE ($1::text IS NULL OR job_name = $1)
 ORDER BY started_at DESC, id DESC
 LIMIT $2
"""


async def abandon_orphans(conn: Conn, job_name: str) -> list[asyncpg.Record]:
    """Mark the job's 'running' rows 'abandoned'; returns (id, instance_id, slot_start)."""
    return await conn.fetch(ABANDON_ORPHANS_SQL, job_name)


async def begin(
    conn: Conn, job_name: str, interval_s: float, instance_id: str
) -> asyncpg.Record | None:
    """Insert a 'running' row for the current slot; None when the slot already has a run.

    Returns the row's ``id`` and ``slot_start`` (timestamptz).
    """
    return await conn.fetchrow(BEGIN_SQL, job_name, float(interval_s), instance_id)


async def finish(
    conn: Conn, run_id: int, status: str, result: Any = None, error: str | None = None
) -> None:
    """Close a run with ``status`` ('ok', 'failed', 'cancelled'), its result and error."""
    await conn.execute(FINISH_SQL, run_id, status, result, error)


async def delete_older_than(conn: Conn, days: int) -> int:
    """Delete finished runs started more than ``days`` days ago; returns the row count."""
    status = await conn.execute(DELETE_OLD_SQL, days)
    return int(status.split()[-1])


async def recent(conn: Conn, job_name: str | None = None, limit: int = 50) -> list[asyncpg.Record]:
    """The latest runs (of one job, or of all when ``job_name`` is None), newest first."""
    return await conn.fetch(RECENT_SQL, job_name, limit)
