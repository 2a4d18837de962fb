"""Forced transition: row locked, version checked, transition and recovery log written."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from recovery.actors import Actor
from recovery.exceptions import ConcurrentModificationError, InvalidTransitionError, NotFoundError
from recovery.workflows import RecoveryAction, WorkflowRecoveryManager
from tests.factories import make_request, make_user


@pytest.fixture
def manager(pool: asyncpg.Pool) -> WorkflowRecoveryManager:
    return WorkflowRecoveryManager(pool, default_threshold_s=24 * 3600)


async def _setup(pool: asyncpg.Pool, **request_kwargs: object) -> tuple[Actor, asyncpg.Record]:
    admin = await make_user(pool, role="admin")
    client = await make_user(pool, role="client")
    await make_user(pool, role="junior_manager")
    request = await make_request(pool, client_id=client["id"], **request_kwargs)  # type: ignore[arg-type]
    return Actor.of(admin), request


async def test_force_moves_to_the_next_step_and_writes_history_log_and_outbox(
    pool: asyncpg.Pool, manager: WorkflowRecoveryManager
) -> None:
    admin, request = await _setup(pool, hours_in_state=30)
    updated = (
        await manager.apply(
            RecoveryAction.FORCE,
            request["id"],
            expected_version=request["version"],
            admin=admin,
            reason="owner on leave",
        )
    ).request
    assert (updated["current_state"], updated["owner_role"]) == ("assigned", "junior_manager")
    assert updated["version"] == request["version"] + 1
    transition = await pool.fetchrow(
        "SELECT * FROM workflow_transitions WHERE request_id = $1", request["id"]
    )
    assert (transition["kind"], transition["from_state"], transition["to_state"]) == (
        "force",
        "new",
        "assigned",
    )
    assert transition["actor_id"] == admin.user_id
    log = await pool.fetchrow(
        "SELECT * FROM workflow_recovery_log WHERE request_id = $1", request["id"]
    )
    assert log["success"] is True
    assert log["reason"] == "owner on leave"
    assert log["before_state"]["state"] == "new"
    assert log["after_state"]["state"] == "assigned"
    templates = {
        r["template_key"]
        for r in await pool.fetch(
            "SELECT template_key FROM pending_notifications WHERE request_id = $1", request["id"]
        )
    }
    assert templates == {"request.waiting_for_you", "request.moving_again"}


async def test_a_repeated_press_is_refused_changes_nothing_and_is_logged(
    pool: asyncpg.Pool, manager: WorkflowRecoveryManager
) -> None:
    admin, request = await _setup(pool)
    await manager.apply(
        RecoveryAction.FORCE, request["id"], expected_version=request["version"], admin=admin
    )
    with pytest.raises(ConcurrentModificationError):
        await manager.apply(
            RecoveryAction.FORCE, request["id"], expected_version=request["version"], admin=admin
        )
    row = await pool.fetchrow("SELECT * FROM service_requests WHERE id = $1", request["id"])
    assert row["current_state"] == "assigned"
    assert row["version"] == request["version"] + 1
    outcomes = [
        r["success"]
        for r in await pool.fetch(
            "SELECT success FROM workflow_recovery_log WHERE request_id = $1 ORDER BY id",
            request["id"],
        )
    ]
    assert outcomes == [True, False]
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM workflow_transitions WHERE request_id = $1", request["id"]
        )
        == 1
    )


async def test_two_admins_at_once_exactly_one_applies(
    pool: asyncpg.Pool, manager: WorkflowRecoveryManager
) -> None:
    admin, request = await _setup(pool)
    results = await asyncio.gather(
        *(
            manager.apply(
                RecoveryAction.FORCE,
                request["id"],
                expected_version=request["version"],
                admin=admin,
            )
            for _ in range(5)
        ),
        return_exceptions=True,
    )
    applied = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, ConcurrentModificationError)]
    assert (len(applied), len(refused)) == (1, 4)
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM workflow_transitions WHERE request_id = $1", request["id"]
        )
        == 1
    )


async def test_terminal_and_missing_requests_are_refused(
    pool: asyncpg.Pool, manager: WorkflowRecoveryManager
) -> None:
    admin, request = await _setup(pool, state="completed", role=None, status="completed")
    with pytest.raises(InvalidTransitionError):
        await manager.apply(
            RecoveryAction.FORCE, request["id"], expected_version=request["version"], admin=admin
        )
    with pytest.raises(NotFoundError):
        await manager.apply(RecoveryAction.FORCE, 10**9, expected_version=1, admin=admin)


async def test_stuck_list_uses_per_state_thresholds(pool: asyncpg.Pool) -> None:
    client = await make_user(pool)
    old = await make_request(pool, client_id=client["id"], hours_in_state=30)
    await make_request(pool, client_id=client["id"], hours_in_state=2)
    review = await make_request(
        pool, client_id=client["id"], state="review", role="controller", hours_in_state=2
    )
    manager = WorkflowRecoveryManager(
        pool, default_threshold_s=24 * 3600, thresholds={"connection:review": 3600}
    )
    page = await manager.find_stuck(limit=10)
    assert [item.request_id for item in page.items] == [old["id"], review["id"]]
    assert page.total == 2
    assert page.items[0].stuck_for_s > 29 * 3600
