"""SQL of ``transaction_log``: the audit trail of transactional operations.

One row per attempt outcome of a logical transaction (``transaction_id``, shared by its
attempts):

- ``committed``: written INSIDE the transaction just before COMMIT, so it exists exactly
  when the attempt committed (and a retry after a lost COMMIT answer can look it up);
- ``rolled_back`` (final), ``retried`` (rolled back, the operation is retried) and ``failed``
  (the COMMIT outcome is unknown): written OUTSIDE the failed transaction, on another pooled
  connection, so they survive the rollback.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, cast

import asyncpg

from database.pool import AnyConnection

INSERT_SQL = """
INSERT INTO transaction_log
    (transaction_id, operation, status, steps, actor_id, error_category, error_message,
     attempt, duration_ms)
VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9)
RETURNING id
"""

# Rows by status and error category in the last $1 seconds (index
# ix_transaction_log_created).
COUNTS_SINCE_SQL = """
SELECT status, error_category, count(*) AS n FROM transaction_log
 WHERE created_at > now() - make_interval(secs => $1)
 GROUP BY status, error_category
"""

# Did an attempt of this logical transaction commit (its row was written inside it)? And is
# the backend that ran the attempt in doubt ($2) still inside a transaction
# (pg_stat_activity.xact_start, visible for backends of the same role)? Until it is out, the
# attempt's COMMIT may still be on its way to the server (a cut network), so a missing
# committed row proves nothing yet. One statement, one snapshot.
LOOKUP_SQL = """
SELECT (SELECT steps FROM transaction_log
         WHERE transaction_id = $1 AND status = 'committed' ORDER BY id LIMIT 1) AS steps,
       EXISTS (SELECT 1 FROM pg_stat_activity
                WHERE pid = $2 AND xact_start IS NOT NULL) AS attempt_open
"""

FOR_TRANSACTION_SQL = "SELECT * FROM transaction_log WHERE transaction_id = $1 ORDER BY id"


@dataclass(frozen=True, slots=True)
class CommittedEntry:
    """The ``committed`` row of a logical transaction: its recorded steps."""

    steps: list[dict[str, Any]]


async def insert(
    conn: AnyConnection | asyncpg.Pool,
    *,
    transaction_id: uuid.UUID,
    operation: str,
    status: str,
    steps: list[dict[str, Any]],
    actor_id: int | None = None,
    error_category: str | None = None,
    error_message: str | None = None,
    attempt: int = 1,
    duration_ms: float | None = None,
) -> int:
    """Append one audit row; returns its id.

    ``steps`` must be JSON-native (the pool's jsonb codec encodes it). ``status`` is one of
    started, committed, rolled_back, retried, failed (CHECK constraint of the table).
    """
    row_id = await conn.fetchval(
        INSERT_SQL,
        transaction_id,
        operation,
        status,
        steps,
        actor_id,
        error_category,
        error_message,
        attempt,
        duration_ms,
    )
    assert row_id is not None
    return cast(int, row_id)


@dataclass(frozen=True, slots=True)
class Lookup:
    """What ``lookup`` found: the committed row (None: no attempt committed yet) and whether
    the backend of the attempt in doubt is still inside a transaction."""

    committed: CommittedEntry | None
    attempt_open: bool


async def lookup(
    conn: AnyConnection | asyncpg.Pool, transaction_id: uuid.UUID, backend_pid: int
) -> Lookup:
    """Did ``transaction_id`` commit, and is the attempt that ran on ``backend_pid`` over?"""
    row = await conn.fetchrow(LOOKUP_SQL, transaction_id, backend_pid)
    assert row is not None
    steps = row["steps"]
    return Lookup(
        committed=CommittedEntry(steps=list(steps or [])) if steps is not None else None,
        attempt_open=row["attempt_open"],
    )


async def counts_since(
    conn: AnyConnection | asyncpg.Pool, window_s: float
) -> dict[tuple[str, str | None], int]:
    """Rows written in the last ``window_s`` seconds per (status, error category); the
    category is None for committed rows. Absent combinations have no key."""
    rows = await conn.fetch(COUNTS_SINCE_SQL, float(window_s))
    return {(row["status"], row["error_category"]): row["n"] for row in rows}


async def for_transaction(
    conn: AnyConnection | asyncpg.Pool, transaction_id: uuid.UUID
) -> list[asyncpg.Record]:
    """Every row of one logical transaction, oldest first."""
    return await conn.fetch(FOR_TRANSACTION_SQL, transaction_id)
