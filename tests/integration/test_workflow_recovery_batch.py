"""Batch recovery: one action over the stuck requests of a filter, each request in its own
transaction against the version seen at review; the result counts succeeded, stale and
failed; a repeated or concurrent batch never applies anything twice."""

from __future__ import annotations

import asyncio

import asyncpg

from recovery.actors import Actor
from recovery.workflows import RecoveryAction, WorkflowRecoveryManager
from tests.factories import make_request, make_user
from tests.integration.workflow_recovery_support import (
    add_transition,
    connection_request_in_materials,
    snapshot,
)


async def _stuck_reviews(pool: asyncpg.Pool, count: int) -> tuple[Actor, list[int]]:
    admin = await make_user(pool, role="admin")
    client = await make_user(pool)
    await make_user(pool, role="controller")
    ids = []
    for index in range(count):
        row = await make_request(
            pool,
            client_id=client["id"],
            state="review",
            role="controller",
            hours_in_state=30 + index,
        )
        await add_transition(pool, row["id"], None, "new", kind="create", hours_ago=50)
        await add_transition(pool, row["id"], "new", "review", hours_ago=30 + index)
        ids.append(row["id"])
    # noise the filter leaves out: another state, another workflow, a fresh one
    await make_request(pool, client_id=client["id"], hours_in_state=40)
    await make_request(
        pool,
        client_id=client["id"],
        workflow_type="repair",
        state="new",
        role="controller",
        hours_in_state=40,
    )
    await make_request(pool, client_id=client["id"], state="review", role="controller")
    return Actor.of(admin), ids


async def test_batch_force_moves_every_matching_stuck_request(pool: asyncpg.Pool) -> None:
    admin, ids = await _stuck_reviews(pool, 4)
    manager = WorkflowRecoveryManager(pool)
    targets = await manager.stuck_targets(workflow_type="connection", state="review")
    assert [t[0] for t in targets] == sorted(ids, reverse=True)  # longest stuck first

    result = await manager.apply_batch(
        RecoveryAction.FORCE, targets, admin=admin, reason="controller on leave"
    )

    assert (len(result.succeeded), len(result.stale), len(result.failed)) == (4, 0, 0)
    assert result.total == 4
    rows = await pool.fetch(
        "SELECT current_state, version FROM service_requests WHERE id = ANY($1::bigint[])", ids
    )
    assert {r["current_state"] for r in rows} == {"in_work"}
    logs = await pool.fetch(
        "SELECT * FROM workflow_recovery_log WHERE batch_id = $1", result.batch_id
    )
    assert sorted(r["request_id"] for r in logs) == sorted(ids)
    assert all(r["success"] and r["reason"] == "controller on leave" for r in logs)
    assert (
        await pool.fetchval("SELECT count(*) FROM workflow_transitions WHERE kind = 'force'") == 4
    )
    assert (await manager.find_stuck(workflow_type="connection", state="review")).total == 0


async def test_batch_counts_stale_and_failed_requests_and_carries_on(pool: asyncpg.Pool) -> None:
    admin, ids = await _stuck_reviews(pool, 5)
    manager = WorkflowRecoveryManager(pool)
    targets = await manager.stuck_targets(workflow_type="connection", state="review")
    moved, no_history = ids[0], ids[1]
    # after the review: someone moves one request, another one loses its history
    await pool.execute("UPDATE service_requests SET version = version + 1 WHERE id = $1", moved)
    await pool.execute("DELETE FROM workflow_transitions WHERE request_id = $1", no_history)

    result = await manager.apply_batch(RecoveryAction.RESET, targets, admin=admin)

    assert sorted(result.succeeded) == sorted(set(ids) - {moved, no_history})
    assert result.stale == [moved]
    assert result.failed == [(no_history, "no_history")]
    logs = await pool.fetch(
        "SELECT request_id, success, error_message FROM workflow_recovery_log "
        "WHERE batch_id = $1 ORDER BY request_id",
        result.batch_id,
    )
    assert len(logs) == 5
    assert {r["request_id"] for r in logs if not r["success"]} == {moved, no_history}
    states = dict(
        await pool.fetch(
            "SELECT id, current_state FROM service_requests WHERE id = ANY($1::bigint[])", ids
        )
    )
    assert states[moved] == states[no_history] == "review"
    assert {states[i] for i in result.succeeded} == {"new"}


async def test_a_repeated_batch_changes_nothing(pool: asyncpg.Pool) -> None:
    admin, _ids = await _stuck_reviews(pool, 3)
    manager = WorkflowRecoveryManager(pool)
    targets = await manager.stuck_targets(workflow_type="connection", state="review")
    first = await manager.apply_batch(RecoveryAction.COMPLETE, targets, admin=admin)
    assert len(first.succeeded) == 3
    after_first = await snapshot(pool)

    again = await manager.apply_batch(RecoveryAction.COMPLETE, targets, admin=admin)

    assert (again.succeeded, sorted(again.stale), again.failed) == (
        [],
        sorted(t[0] for t in targets),
        [],
    )
    assert await snapshot(pool) == after_first


async def test_two_admins_running_the_same_batch_apply_each_request_once(
    pool: asyncpg.Pool,
) -> None:
    admin, ids = await _stuck_reviews(pool, 6)
    other = await make_user(pool, role="admin")
    manager = WorkflowRecoveryManager(pool)
    targets = await manager.stuck_targets(workflow_type="connection", state="review")

    first, second = await asyncio.gather(
        manager.apply_batch(RecoveryAction.FORCE, targets, admin=admin),
        manager.apply_batch(RecoveryAction.FORCE, targets, admin=Actor.of(other)),
    )

    assert sorted(first.succeeded + second.succeeded) == sorted(ids)
    assert sorted(first.stale + second.stale) == sorted(ids)
    assert first.failed == second.failed == []
    assert (
        await pool.fetchval("SELECT count(*) FROM workflow_transitions WHERE kind = 'force'") == 6
    )


async def test_batch_reset_returns_materials_and_the_review_shows_them(
    pool: asyncpg.Pool,
) -> None:
    admin, s = await connection_request_in_materials(pool)
    manager = WorkflowRecoveryManager(pool)
    targets = await manager.stuck_targets(workflow_type="connection", state="materials")
    assert targets == [(s["request"]["id"], s["request"]["version"])]
    preview = await manager.preview_batch_materials(RecoveryAction.RESET, [t[0] for t in targets])
    assert {(p.sku, p.quantity) for p in preview} == {("RTR", 2), ("CBL", 15)}
    kept = await manager.preview_batch_materials(RecoveryAction.COMPLETE, [t[0] for t in targets])
    assert sum(k.quantity for k in kept if k.sku == "CBL") == 35

    result = await manager.apply_batch(RecoveryAction.RESET, targets, admin=admin)

    assert result.succeeded == [s["request"]["id"]]
    assert result.returned_units == 17
    assert dict(await pool.fetch("SELECT sku, balance FROM materials")) == {"CBL": 80, "RTR": 10}


async def test_batch_reassign_to_one_user(pool: asyncpg.Pool) -> None:
    admin = await make_user(pool, role="admin")
    client = await make_user(pool)
    gone = await make_user(pool, role="technician")
    aziz = await make_user(pool, role="technician")
    await pool.execute("UPDATE users SET is_active = FALSE WHERE id = $1", gone["id"])
    ids = [
        (
            await make_request(
                pool,
                client_id=client["id"],
                workflow_type="repair",
                state="in_work",
                role="technician",
                assignee_id=gone["id"],
            )
        )["id"]
        for _ in range(3)
    ]
    manager = WorkflowRecoveryManager(pool)
    targets = await manager.stuck_targets(workflow_type="repair", state="in_work")
    assert sorted(t[0] for t in targets) == sorted(ids)

    result = await manager.apply_batch(
        RecoveryAction.REASSIGN,
        targets,
        admin=Actor.of(admin),
        assignee_id=aziz["id"],
    )

    assert sorted(result.succeeded) == sorted(ids)
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM service_requests WHERE assignee_id = $1", aziz["id"]
        )
        == 3
    )
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM pending_notifications WHERE chat_id = $1 "
            "AND template_key = 'request.waiting_for_you'",
            aziz["telegram_id"],
        )
        == 3
    )
