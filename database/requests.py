"""SQL of ``service_requests`` and ``workflow_transitions``."""

from __future__ import annotations

from typing import Any

import asyncpg

from database.pool import AnyConnection

INSERT_REQUEST_SQL = """
INSERT INTO service_requests
    (workflow_type, client_id, description, address, current_state, owner_role)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING *
"""

# Lock one request for a state change (the caller then checks the version it saw).
LOCK_REQUEST_SQL = "SELECT * FROM service_requests WHERE id = $1 FOR UPDATE"

# Keep the request's state stable while it is read (material use): concurrent readers do not
# block each other, a state change waits until they are done.
LOCK_REQUEST_SHARED_SQL = "SELECT * FROM service_requests WHERE id = $1 FOR SHARE"


# Apply a state change guarded by optimistic locking: no row comes back when the version
# moved on since the caller read it.
APPLY_STATE_SQL = """
UPDATE service_requests SET
    current_state = $3,
    owner_role = $4,
    assignee_id = $5,
    status = $6,
    version = version + 1,
    state_entered_at = CASE WHEN current_state IS DISTINCT FROM $3 THEN now()
                            ELSE state_entered_at END,
    completed_at = CASE WHEN $6 = 'completed' THEN now() ELSE completed_at END,
    updated_at = now()
WHERE id = $1 AND version = $2
RETURNING *
"""

INSERT_TRANSITION_SQL = """
INSERT INTO workflow_transitions
    (request_id, from_state, to_state, from_role, to_role, from_assignee_id, to_assignee_id,
     actor_id, kind, reason)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
RETURNING *
"""


async def insert(
    conn: AnyConnection,
    *,
    workflow_type: str,
    client_id: int,
    description: str,
    address: str,
    state: str,
    role: str | None,
) -> asyncpg.Record:
    """Insert a new active request in its first state; returns the row."""
    row = await conn.fetchrow(
        INSERT_REQUEST_SQL, workflow_type, client_id, description, address, state, role
    )
    assert row is not None
    return row


async def get(conn: AnyConnection | asyncpg.Pool, request_id: int) -> asyncpg.Record | None:
    """The request, or None."""
    return await conn.fetchrow("SELECT * FROM service_requests WHERE id = $1", request_id)


async def lock(conn: AnyConnection, request_id: int) -> asyncpg.Record | None:
    """The request locked ``FOR UPDATE`` until the transaction ends, or None."""
    return await conn.fetchrow(LOCK_REQUEST_SQL, request_id)


async def lock_shared(conn: AnyConnection, request_id: int) -> asyncpg.Record | None:
    """The request locked ``FOR SHARE`` until the transaction ends (its state cannot change
    meanwhile; other shared lockers are not blocked), or None."""
    return await conn.fetchrow(LOCK_REQUEST_SHARED_SQL, request_id)


async def apply_state(
    conn: AnyConnection,
    *,
    request_id: int,
    expected_version: int,
    state: str,
    role: str | None,
    assignee_id: int | None,
    status: str,
) -> asyncpg.Record | None:
    """Move the request if its version is still ``expected_version``; None otherwise."""
    return await conn.fetchrow(
        APPLY_STATE_SQL, request_id, expected_version, state, role, assignee_id, status
    )


async def insert_transition(
    conn: AnyConnection,
    *,
    request_id: int,
    from_state: str | None,
    to_state: str,
    from_role: str | None,
    to_role: str | None,
    from_assignee_id: int | None,
    to_assignee_id: int | None,
    actor_id: int | None,
    kind: str,
    reason: str | None = None,
) -> asyncpg.Record:
    """Append one row to the request's history."""
    row = await conn.fetchrow(
        INSERT_TRANSITION_SQL,
        request_id,
        from_state,
        to_state,
        from_role,
        to_role,
        from_assignee_id,
        to_assignee_id,
        actor_id,
        kind,
        reason,
    )
    assert row is not None
    return row


async def history(
    conn: AnyConnection | asyncpg.Pool, request_id: int, limit: int = 20
) -> list[asyncpg.Record]:
    """The request's last ``limit`` transitions, newest first, with the names of the actor
    (``actor_name``) and of the assignees before and after (``from_assignee_name``,
    ``to_assignee_name``)."""
    return await conn.fetch(
        """
        SELECT t.*, u.full_name AS actor_name,
               fu.full_name AS from_assignee_name, tu.full_name AS to_assignee_name
          FROM workflow_transitions t
          LEFT JOIN users u ON u.id = t.actor_id
          LEFT JOIN users fu ON fu.id = t.from_assignee_id
          LEFT JOIN users tu ON tu.id = t.to_assignee_id
         WHERE t.request_id = $1 ORDER BY t.id DESC LIMIT $2
        """,
        request_id,
        limit,
    )


# Active requests of a role, oldest first; with $3, only those nobody or that user holds
LIST_FOR_ROLE_SQL = """
SELECT * FROM service_requests
 WHERE status = 'active' AND owner_role = $1
   AND ($3::bigint IS NULL OR assignee_id IS NULL OR assignee_id = $3)
 ORDER BY id LIMIT $2
"""


async def list_for_role(
    conn: AnyConnection | asyncpg.Pool,
    role: str,
    *,
    limit: int = 20,
    assignee_id: int | None = None,
) -> list[asyncpg.Record]:
    """Active requests owned by ``role``, oldest first; with ``assignee_id``, only those
    assigned to nobody or to that user."""
    return await conn.fetch(LIST_FOR_ROLE_SQL, role, limit, assignee_id)


async def list_for_client(
    conn: AnyConnection | asyncpg.Pool, client_id: int, *, limit: int = 20
) -> list[asyncpg.Record]:
    """The client's requests, newest first."""
    return await conn.fetch(
        "SELECT * FROM service_requests WHERE client_id = $1 ORDER BY id DESC LIMIT $2",
        client_id,
        limit,
    )


def snapshot(row: asyncpg.Record) -> dict[str, Any]:
    """A request row's state, role, assignee, status and version: the ``before`` and
    ``after`` that ``transaction_log`` and ``workflow_recovery_log`` record."""
    return {
        "state": row["current_state"],
        "role": row["owner_role"],
        "assignee_id": row["assignee_id"],
        "status": row["status"],
        "version": row["version"],
    }


async def digest_items(
    conn: AnyConnection | asyncpg.Pool, request_ids: list[int]
) -> list[asyncpg.Record]:
    """``id``, ``workflow_type``, ``current_state`` and ``stuck_s`` (seconds in the current
    state, by the database clock) of the requests, in the order of ``request_ids``: the
    lines of the stuck digest."""
    return await conn.fetch(
        """
        SELECT r.id, r.workflow_type, r.current_state,
               extract(epoch FROM now() - r.state_entered_at)::bigint AS stuck_s
          FROM unnest($1::bigint[]) WITH ORDINALITY AS t(id, n)
          JOIN service_requests r ON r.id = t.id
         ORDER BY t.n
        """,
        request_ids,
    )
