"""Builders shared by the workflow-recovery tests: history rows, material issues, and a
snapshot of every table a recovery action may touch."""

from __future__ import annotations

import itertools
from typing import Any

import asyncpg

from recovery.actors import Actor
from tests.factories import make_request, make_user

_keys = itertools.count(1)


async def add_transition(
    db: asyncpg.Pool | asyncpg.Connection,
    request_id: int,
    from_state: str | None,
    to_state: str,
    *,
    kind: str = "normal",
    to_assignee_id: int | None = None,
    hours_ago: float = 0,
) -> None:
    """Append a history row (``hours_ago`` hours in the past)."""
    await db.execute(
        "INSERT INTO workflow_transitions (request_id, from_state, to_state, to_assignee_id, "
        "kind, created_at) VALUES ($1, $2, $3, $4, $5, now() - make_interval(secs => $6))",
        request_id,
        from_state,
        to_state,
        to_assignee_id,
        kind,
        hours_ago * 3600.0,
    )


async def issue(
    db: asyncpg.Pool | asyncpg.Connection, *, material_id: int, request_id: int, quantity: int
) -> int:
    """Issue ``quantity`` units for the request as the material-use code does (ledger row
    with quantity < 0, stamped by the trigger, and the balance decremented); returns the
    ledger id."""
    ledger_id = await db.fetchval(
        "INSERT INTO inventory_transactions (material_id, kind, quantity, request_id, "
        "idempotency_key) VALUES ($1, 'issue', $2, $3, $4) RETURNING id",
        material_id,
        -quantity,
        request_id,
        f"test:use:{next(_keys)}",
    )
    await db.execute(
        "UPDATE materials SET balance = balance - $2 WHERE id = $1", material_id, quantity
    )
    return ledger_id


async def move(
    db: asyncpg.Pool | asyncpg.Connection,
    request_id: int,
    state: str,
    role: str | None,
    *,
    hours_in_state: float = 0,
    assignee_id: int | None = None,
) -> None:
    """Put the request in ``state`` with its history row, as a normal transition does (the
    row's ``created_at`` equals the request's new ``state_entered_at``)."""
    await db.execute(
        """
        WITH old AS (SELECT current_state FROM service_requests WHERE id = $1),
        moved AS (
            UPDATE service_requests SET current_state = $2, owner_role = $3, assignee_id = $4,
                   version = version + 1, state_entered_at = now() - make_interval(secs => $5)
             WHERE id = $1
            RETURNING state_entered_at)
        INSERT INTO workflow_transitions (request_id, from_state, to_state, to_assignee_id,
                                          kind, created_at)
        SELECT $1, old.current_state, $2, $4, 'normal', moved.state_entered_at
          FROM old, moved
        """,
        request_id,
        state,
        role,
        assignee_id,
        hours_in_state * 3600.0,
    )


async def connection_request_in_materials(
    db: asyncpg.Pool,
) -> tuple[Actor, dict[str, Any]]:
    """A connection request that went new -> ... -> in_work (technician Tom assigned, used
    cable) -> materials (warehouse issued routers and more cable), stuck there for 30 h."""
    admin_row = await make_user(db, role="admin", name="Ada Admin")
    client = await make_user(db, role="client", name="Carl Client")
    tom = await make_user(db, role="technician", name="Tom Technician")
    wendy = await make_user(db, role="warehouse", name="Wendy Warehouse")
    cable = await db.fetchrow(
        "INSERT INTO materials (sku, name, unit, balance) VALUES ('CBL', 'Cable', 'm', 100) "
        "RETURNING *"
    )
    router = await db.fetchrow(
        "INSERT INTO materials (sku, name, unit, balance) VALUES ('RTR', 'Router', 'pcs', 10) "
        "RETURNING *"
    )
    for material, quantity in ((cable, 100), (router, 10)):
        await db.execute(
            "INSERT INTO inventory_transactions (material_id, kind, quantity, idempotency_key) "
            "VALUES ($1, 'receipt', $2, $3)",
            material["id"],
            quantity,
            f"test:receipt:{material['sku']}",
        )
    request = await make_request(db, client_id=client["id"], hours_in_state=100)
    await add_transition(db, request["id"], None, "new", kind="create", hours_ago=100)
    for state, role in (("assigned", "junior_manager"), ("review", "controller")):
        await move(db, request["id"], state, role, hours_in_state=90)
    await move(db, request["id"], "in_work", "technician", hours_in_state=60, assignee_id=tom["id"])
    in_work_issue = await issue(db, material_id=cable["id"], request_id=request["id"], quantity=20)
    await move(db, request["id"], "materials", "warehouse", hours_in_state=30)
    materials_issues = [
        await issue(db, material_id=router["id"], request_id=request["id"], quantity=2),
        await issue(db, material_id=cable["id"], request_id=request["id"], quantity=15),
    ]
    row = await db.fetchrow("SELECT * FROM service_requests WHERE id = $1", request["id"])
    return Actor.of(admin_row), {
        "request": row,
        "client": client,
        "tom": tom,
        "wendy": wendy,
        "cable": cable,
        "router": router,
        "in_work_issue": in_work_issue,
        "materials_issues": materials_issues,
    }


TABLES = (
    "service_requests",
    "workflow_transitions",
    "materials",
    "inventory_transactions",
    "pending_notifications",
)


async def snapshot(db: asyncpg.Pool) -> dict[str, list[dict[str, Any]]]:
    """Every row of the tables a recovery action writes (the recovery log aside)."""
    result = {}
    for table in TABLES:
        rows = await db.fetch(f"SELECT * FROM {table} ORDER BY id")
        result[table] = [dict(row) for row in rows]
    return result


async def log_rows(db: asyncpg.Pool, request_id: int) -> list[asyncpg.Record]:
    """The request's ``workflow_recovery_log`` rows, oldest first."""
    return await db.fetch(
        "SELECT * FROM workflow_recovery_log WHERE request_id = $1 ORDER BY id", request_id
    )
