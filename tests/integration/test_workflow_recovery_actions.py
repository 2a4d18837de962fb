"""The four recovery actions: their effect on every table they touch (requests, history,
recovery log, ledger and balances, outbox), refusals that change nothing, and concurrent or
repeated presses of which exactly one applies."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from database.compensation import reversal_key
from recovery.actors import Actor
from recovery.exceptions import (
    ConcurrentModificationError,
    InputValidationError,
    InvalidTransitionError,
    NotFoundError,
)
from recovery.state_manager import EnhancedStateManager
from recovery.workflows import (
    NO_HISTORY,
    PreviewOutdatedError,
    RecoveryAction,
    WorkflowRecoveryManager,
    refusal_code,
)
from tests.factories import make_request, make_user
from tests.integration.workflow_recovery_support import (
    add_transition,
    connection_request_in_materials,
    issue,
    log_rows,
    move,
    snapshot,
)


@pytest.fixture
def manager(pool: asyncpg.Pool) -> WorkflowRecoveryManager:
    return WorkflowRecoveryManager(pool)


async def _outbox(pool: asyncpg.Pool, request_id: int) -> set[tuple[str, int]]:
    rows = await pool.fetch(
        "SELECT template_key, chat_id FROM pending_notifications WHERE request_id = $1",
        request_id,
    )
    return {(row["template_key"], row["chat_id"]) for row in rows}


async def _ledger_matches_balances(pool: asyncpg.Pool) -> bool:
    return bool(
        await pool.fetchval(
            "SELECT bool_and(m.balance = COALESCE(l.total, 0)) FROM materials m LEFT JOIN "
            "(SELECT material_id, sum(quantity) AS total FROM inventory_transactions "
            "GROUP BY material_id) l ON l.material_id = m.id"
        )
    )


# --- reset with compensation -------------------------------------------------------------


async def test_reset_goes_back_and_returns_what_the_undone_step_consumed(
    pool: asyncpg.Pool, manager: WorkflowRecoveryManager
) -> None:
    admin, s = await connection_request_in_materials(pool)
    request = s["request"]

    preview = await manager.preview(RecoveryAction.RESET, request["id"])
    assert (preview.to_state, preview.to_role, preview.to_assignee_id) == (
        "in_work",
        "technician",
        s["tom"]["id"],
    )
    assert sorted(r.issue_id for r in preview.returns) == sorted(s["materials_issues"])
    assert {(r.sku, r.quantity) for r in preview.returns} == {("RTR", 2), ("CBL", 15)}

    outcome = await manager.apply(
        RecoveryAction.RESET,
        request["id"],
        expected_version=request["version"],
        admin=admin,
        reason="warehouse issued the wrong kit",
        expected_fingerprint=preview.fingerprint,
    )

    row = await pool.fetchrow("SELECT * FROM service_requests WHERE id = $1", request["id"])
    assert (row["current_state"], row["owner_role"], row["assignee_id"], row["status"]) == (
        "in_work",
        "technician",
        s["tom"]["id"],
        "active",
    )
    assert row["version"] == request["version"] + 1
    assert row["state_entered_at"] > request["state_entered_at"]
    last = await pool.fetchrow(
        "SELECT * FROM workflow_transitions WHERE request_id = $1 ORDER BY id DESC LIMIT 1",
        request["id"],
    )
    assert (last["kind"], last["from_state"], last["to_state"]) == ("reset", "materials", "in_work")
    assert (last["actor_id"], last["reason"]) == (admin.user_id, "warehouse issued the wrong kit")
    # ledger: one return per issue of the undone step, the in_work issue untouched
    returns = await pool.fetch(
        "SELECT * FROM inventory_transactions WHERE kind = 'return' ORDER BY reverses_id"
    )
    assert [(r["reverses_id"], r["quantity"]) for r in returns] == [
        (s["materials_issues"][0], 2),
        (s["materials_issues"][1], 15),
    ]
    assert all(r["request_id"] == request["id"] for r in returns)
    assert all(r["actor_id"] == admin.user_id for r in returns)
    assert {r["idempotency_key"] for r in returns} == {
        reversal_key(i) for i in s["materials_issues"]
    }
    assert {r.ledger_id for r in outcome.reversals} == {r["id"] for r in returns}
    balances = dict(await pool.fetch("SELECT sku, balance FROM materials"))
    assert balances == {"CBL": 100 - 20, "RTR": 10}
    assert await _ledger_matches_balances(pool)
    # audit: before, after with the returns
    (log,) = await log_rows(pool, request["id"])
    assert (log["action"], log["success"], log["reason"]) == (
        "reset_state",
        True,
        "warehouse issued the wrong kit",
    )
    assert (log["admin_id"], log["admin_telegram_id"]) == (admin.user_id, admin.telegram_id)
    assert log["before_state"]["state"] == "materials"
    assert log["after_state"]["state"] == "in_work"
    assert {r["issue_id"] for r in log["after_state"]["returned"]} == set(s["materials_issues"])
    # outbox: the technician who held in_work, and the client ("moving again")
    assert await _outbox(pool, request["id"]) == {
        ("request.waiting_for_you", s["tom"]["telegram_id"]),
        ("request.moving_again", s["client"]["telegram_id"]),
    }


async def test_reset_returns_only_what_is_still_outstanding(
    pool: asyncpg.Pool, manager: WorkflowRecoveryManager
) -> None:
    admin, s = await connection_request_in_materials(pool)
    request = s["request"]
    cable_issue = s["materials_issues"][1]  # 15 m
    await pool.execute(
        "INSERT INTO inventory_transactions (material_id, kind, quantity, request_id, "
        "idempotency_key, reverses_id) VALUES ($1, 'return', 4, $2, 'manual:return', $3)",
        s["cable"]["id"],
        request["id"],
        cable_issue,
    )
    await pool.execute("UPDATE materials SET balance = balance + 4 WHERE id = $1", s["cable"]["id"])

    outcome = await manager.apply(
        RecoveryAction.RESET, request["id"], expected_version=request["version"], admin=admin
    )

    assert {(r.issue_id, r.quantity) for r in outcome.reversals} == {
        (s["materials_issues"][0], 2),
        (cable_issue, 11),
    }
    assert (
        await pool.fetchval(
            "SELECT sum(quantity) FROM inventory_transactions WHERE reverses_id = $1", cable_issue
        )
        == 15
    )
    assert await _ledger_matches_balances(pool)


async def test_reset_with_no_history_is_refused_and_changes_nothing(
    pool: asyncpg.Pool, manager: WorkflowRecoveryManager
) -> None:
    admin_row = await make_user(pool, role="admin")
    admin = Actor.of(admin_row)
    client = await make_user(pool)
    created_only = await make_request(pool, client_id=client["id"], hours_in_state=30)
    await add_transition(pool, created_only["id"], None, "new", kind="create")
    no_rows = await make_request(
        pool, client_id=client["id"], state="review", role="controller", hours_in_state=30
    )
    before = await snapshot(pool)

    for request in (created_only, no_rows):
        with pytest.raises(InvalidTransitionError) as refused:
            await manager.apply(
                RecoveryAction.RESET,
                request["id"],
                expected_version=request["version"],
                admin=admin,
            )
        assert refused.value.detail == NO_HISTORY
        assert refusal_code(refused.value) == "no_history"
        (log,) = await log_rows(pool, request["id"])
        assert log["success"] is False
        assert log["error_message"].startswith("no_history")
    assert await snapshot(pool) == before
    with pytest.raises(InvalidTransitionError):
        await manager.preview(RecoveryAction.RESET, created_only["id"])


async def test_a_second_reset_goes_one_step_further_back(
    pool: asyncpg.Pool, manager: WorkflowRecoveryManager
) -> None:
    admin, s = await connection_request_in_materials(pool)
    request = s["request"]
    first = await manager.apply(
        RecoveryAction.RESET, request["id"], expected_version=request["version"], admin=admin
    )
    assert first.request["current_state"] == "in_work"
    assert first.request["assignee_id"] == s["tom"]["id"]
    # back in in_work, Tom uses 5 m more before it is reset again
    again = await issue(pool, material_id=s["cable"]["id"], request_id=request["id"], quantity=5)

    second = await manager.apply(
        RecoveryAction.RESET, request["id"], expected_version=first.request["version"], admin=admin
    )

    assert second.request["current_state"] == "review"
    # the in_work step is undone: what it consumed in both its visits goes back (20 + 5 m);
    # the materials step's returns are not written twice
    assert {(r.issue_id, r.quantity) for r in second.reversals} == {
        (s["in_work_issue"], 20),
        (again, 5),
    }
    assert dict(await pool.fetch("SELECT sku, balance FROM materials")) == {"CBL": 100, "RTR": 10}
    assert (
        await pool.fetchval("SELECT count(*) FROM inventory_transactions WHERE kind = 'return'")
        == 4
    )
    assert await _ledger_matches_balances(pool)


async def test_reset_refuses_when_the_previewed_materials_changed(
    pool: asyncpg.Pool, manager: WorkflowRecoveryManager
) -> None:
    admin, s = await connection_request_in_materials(pool)
    request = s["request"]
    preview = await manager.preview(RecoveryAction.RESET, request["id"])
    # the warehouse issues one more router after the admin saw the confirmation screen
    await issue(pool, material_id=s["router"]["id"], request_id=request["id"], quantity=1)
    before = await snapshot(pool)

    with pytest.raises(PreviewOutdatedError) as refused:
        await manager.apply(
            RecoveryAction.RESET,
            request["id"],
            expected_version=request["version"],
            admin=admin,
            expected_fingerprint=preview.fingerprint,
        )

    assert refusal_code(refused.value) == "materials_changed"
    assert await snapshot(pool) == before


# --- force, complete, reassign ----------------------------------------------------------


async def test_force_to_the_last_step_completes_the_request(
    pool: asyncpg.Pool, manager: WorkflowRecoveryManager
) -> None:
    admin_row = await make_user(pool, role="admin")
    client = await make_user(pool)
    request = await make_request(
        pool,
        client_id=client["id"],
        workflow_type="repair",
        state="quality_check",
        role="controller",
        hours_in_state=30,
    )

    updated = (
        await manager.apply(
            RecoveryAction.FORCE,
            request["id"],
            expected_version=request["version"],
            admin=Actor.of(admin_row),
        )
    ).request

    assert (updated["current_state"], updated["status"], updated["owner_role"]) == (
        "completed",
        "completed",
        None,
    )
    assert updated["completed_at"] is not None
    assert await _outbox(pool, request["id"]) == {("request.moving_again", client["telegram_id"])}


async def test_complete_skips_the_remaining_steps_and_keeps_materials_charged(
    pool: asyncpg.Pool, manager: WorkflowRecoveryManager
) -> None:
    admin, s = await connection_request_in_materials(pool)
    request = s["request"]
    preview = await manager.preview(RecoveryAction.COMPLETE, request["id"])
    assert preview.skipped_states == ("quality_check",)
    assert {(k.sku, k.quantity) for k in preview.kept} == {("CBL", 20), ("RTR", 2), ("CBL", 15)}
    ledger_before = await pool.fetch("SELECT * FROM inventory_transactions ORDER BY id")
    balances_before = await pool.fetch("SELECT * FROM materials ORDER BY id")

    outcome = await manager.apply(
        RecoveryAction.COMPLETE,
        request["id"],
        expected_version=request["version"],
        admin=admin,
        reason="done on site",
    )

    row = outcome.request
    assert (row["current_state"], row["status"], row["owner_role"], row["assignee_id"]) == (
        "completed",
        "completed",
        None,
        None,
    )
    assert row["completed_at"] is not None
    last = await pool.fetchrow(
        "SELECT * FROM workflow_transitions WHERE request_id = $1 ORDER BY id DESC LIMIT 1",
        request["id"],
    )
    assert (last["kind"], last["from_state"], last["to_state"], last["reason"]) == (
        "complete",
        "materials",
        "completed",
        "done on site",
    )
    (log,) = await log_rows(pool, request["id"])
    assert (log["action"], log["success"]) == ("complete", True)
    assert log["after_state"]["status"] == "completed"
    assert await pool.fetch("SELECT * FROM inventory_transactions ORDER BY id") == ledger_before
    assert await pool.fetch("SELECT * FROM materials ORDER BY id") == balances_before
    assert await _outbox(pool, request["id"]) == {
        ("request.moving_again", s["client"]["telegram_id"])
    }


async def test_reassign_gives_the_request_to_an_active_user_of_the_owning_role(
    pool: asyncpg.Pool, manager: WorkflowRecoveryManager
) -> None:
    admin_row = await make_user(pool, role="admin")
    admin = Actor.of(admin_row)
    client = await make_user(pool)
    gone = await make_user(pool, role="technician", name="Gone")
    aziz = await make_user(pool, role="technician", name="Aziz")
    await make_user(pool, role="technician", name="Bob")
    await pool.execute("UPDATE users SET is_active = FALSE WHERE id = $1", gone["id"])
    request = await make_request(
        pool,
        client_id=client["id"],
        state="in_work",
        role="technician",
        hours_in_state=3,
        assignee_id=gone["id"],
    )
    candidates, total = await manager.reassign_candidates(
        "technician", exclude_user_id=gone["id"], limit=1, offset=0
    )
    assert (total, [c["full_name"] for c in candidates]) == (2, ["Aziz"])
    second_page, _ = await manager.reassign_candidates(
        "technician", exclude_user_id=gone["id"], limit=1, offset=1
    )
    assert [c["full_name"] for c in second_page] == ["Bob"]

    outcome = await manager.apply(
        RecoveryAction.REASSIGN,
        request["id"],
        expected_version=request["version"],
        assignee_id=aziz["id"],
        admin=admin,
    )

    row = outcome.request
    assert (row["current_state"], row["owner_role"], row["assignee_id"]) == (
        "in_work",
        "technician",
        aziz["id"],
    )
    assert row["state_entered_at"] == request["state_entered_at"]
    assert row["version"] == request["version"] + 1
    last = await pool.fetchrow(
        "SELECT * FROM workflow_transitions WHERE request_id = $1 ORDER BY id DESC LIMIT 1",
        request["id"],
    )
    assert (last["kind"], last["from_assignee_id"], last["to_assignee_id"]) == (
        "reassign",
        gone["id"],
        aziz["id"],
    )
    (log,) = await log_rows(pool, request["id"])
    assert (
        log["action"],
        log["before_state"]["assignee_id"],
        log["after_state"]["assignee_id"],
    ) == (
        "reassign",
        gone["id"],
        aziz["id"],
    )
    assert await _outbox(pool, request["id"]) == {
        ("request.waiting_for_you", aziz["telegram_id"]),
        ("request.moving_again", client["telegram_id"]),
    }
    # no longer stuck for an unreachable assignee
    assert (await manager.find_stuck()).total == 0


async def test_reassign_refuses_users_who_cannot_take_it(
    pool: asyncpg.Pool, manager: WorkflowRecoveryManager
) -> None:
    admin_row = await make_user(pool, role="admin")
    admin = Actor.of(admin_row)
    client = await make_user(pool)
    holder = await make_user(pool, role="technician")
    inactive = await make_user(pool, role="technician")
    blocked = await make_user(pool, role="technician")
    manager_role = await make_user(pool, role="manager")
    await pool.execute("UPDATE users SET is_active = FALSE WHERE id = $1", inactive["id"])
    await pool.execute("UPDATE users SET blocked_bot_at = now() WHERE id = $1", blocked["id"])
    request = await make_request(
        pool,
        client_id=client["id"],
        state="in_work",
        role="technician",
        hours_in_state=30,
        assignee_id=holder["id"],
    )
    before = await snapshot(pool)

    cases = [
        (inactive["id"], NotFoundError, "assignee_unavailable"),
        (blocked["id"], NotFoundError, "assignee_unavailable"),
        (manager_role["id"], InputValidationError, "assignee_unavailable"),
        (10**9, NotFoundError, "assignee_unavailable"),
        (holder["id"], InvalidTransitionError, "already_assigned"),
    ]
    for assignee_id, error, code in cases:
        with pytest.raises(error) as refused:
            await manager.apply(
                RecoveryAction.REASSIGN,
                request["id"],
                expected_version=request["version"],
                assignee_id=assignee_id,
                admin=admin,
            )
        assert refusal_code(refused.value) == code
    assert await snapshot(pool) == before
    assert [r["success"] for r in await log_rows(pool, request["id"])] == [False] * len(cases)


# --- stale, repeated, concurrent ---------------------------------------------------------

ACTIONS = [
    RecoveryAction.FORCE,
    RecoveryAction.RESET,
    RecoveryAction.COMPLETE,
    RecoveryAction.REASSIGN,
]


async def _kit(pool: asyncpg.Pool) -> tuple[Actor, Actor, asyncpg.Record, asyncpg.Record]:
    admin, s = await connection_request_in_materials(pool)
    other_row = await make_user(pool, role="admin")
    aziz = await make_user(pool, role="warehouse", name="Aziz Warehouse")
    return admin, Actor.of(other_row), s["request"], aziz


@pytest.mark.parametrize("action", ACTIONS, ids=lambda a: a.value)
async def test_a_stale_action_is_refused_and_changes_nothing(
    pool: asyncpg.Pool, manager: WorkflowRecoveryManager, action: RecoveryAction
) -> None:
    admin, _other, request, aziz = await _kit(pool)
    # someone moves the request after the admin opened it (a warehouse clerk takes it)
    await pool.execute(
        "UPDATE service_requests SET assignee_id = $2, version = version + 1 WHERE id = $1",
        request["id"],
        aziz["id"] if action is not RecoveryAction.REASSIGN else None,
    )
    before = await snapshot(pool)

    with pytest.raises(ConcurrentModificationError) as refused:
        await manager.apply(
            action,
            request["id"],
            expected_version=request["version"],
            admin=admin,
            assignee_id=aziz["id"],
        )

    assert refusal_code(refused.value) == "stale"
    assert await snapshot(pool) == before
    (log,) = await log_rows(pool, request["id"])
    assert (log["action"], log["success"]) == (action.value, False)
    assert log["error_message"].startswith("stale")
    assert log["before_state"]["version"] == request["version"] + 1


@pytest.mark.parametrize("action", ACTIONS, ids=lambda a: a.value)
async def test_the_same_button_pressed_twice_applies_once(
    pool: asyncpg.Pool, manager: WorkflowRecoveryManager, action: RecoveryAction
) -> None:
    admin, _other, request, aziz = await _kit(pool)
    press = {
        "expected_version": request["version"],
        "admin": admin,
        "assignee_id": aziz["id"],
    }
    await manager.apply(action, request["id"], **press)  # type: ignore[arg-type]
    after_first = await snapshot(pool)

    with pytest.raises(ConcurrentModificationError):
        await manager.apply(action, request["id"], **press)  # type: ignore[arg-type]

    assert await snapshot(pool) == after_first
    assert [r["success"] for r in await log_rows(pool, request["id"])] == [True, False]


@pytest.mark.parametrize("action", ACTIONS, ids=lambda a: a.value)
async def test_two_admins_at_once_exactly_one_applies(
    pool: asyncpg.Pool, manager: WorkflowRecoveryManager, action: RecoveryAction
) -> None:
    admin, other, request, aziz = await _kit(pool)
    transitions_before = await pool.fetchval("SELECT count(*) FROM workflow_transitions")

    results = await asyncio.gather(
        *(
            manager.apply(
                action,
                request["id"],
                expected_version=request["version"],
                admin=who,
                assignee_id=aziz["id"],
            )
            for who in (admin, other, admin, other, admin, other)
        ),
        return_exceptions=True,
    )

    applied = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, ConcurrentModificationError)]
    assert (len(applied), len(refused)) == (1, 5)
    assert await pool.fetchval("SELECT count(*) FROM workflow_transitions") == (
        transitions_before + 1
    )
    row = await pool.fetchrow("SELECT * FROM service_requests WHERE id = $1", request["id"])
    assert row["version"] == request["version"] + 1
    outcomes = [r["success"] for r in await log_rows(pool, request["id"])]
    assert sorted(outcomes) == [False] * 5 + [True]
    # a reset gave each issue back once; the ledger still equals the balances
    returns = await pool.fetchval(
        "SELECT count(*) FROM inventory_transactions WHERE kind = 'return'"
    )
    assert returns == (2 if action is RecoveryAction.RESET else 0)
    assert await _ledger_matches_balances(pool)


async def test_missing_and_inactive_requests_are_refused(
    pool: asyncpg.Pool, manager: WorkflowRecoveryManager
) -> None:
    admin_row = await make_user(pool, role="admin")
    admin = Actor.of(admin_row)
    client = await make_user(pool)
    cancelled = await make_request(pool, client_id=client["id"], status="cancelled")
    await move(pool, cancelled["id"], "assigned", "junior_manager")
    version = await pool.fetchval(
        "SELECT version FROM service_requests WHERE id = $1", cancelled["id"]
    )
    for action in ACTIONS:
        with pytest.raises(NotFoundError) as missing:
            await manager.apply(action, 10**9, expected_version=1, admin=admin, assignee_id=1)
        assert refusal_code(missing.value) == "not_found"
        with pytest.raises(InvalidTransitionError) as inactive:
            await manager.apply(
                action, cancelled["id"], expected_version=version, admin=admin, assignee_id=1
            )
        assert refusal_code(inactive.value) == "not_active"


# --- with the real workflow operations ---------------------------------------------------


async def test_resets_reverse_exactly_what_the_real_material_uses_of_each_step_took(
    pool: asyncpg.Pool, manager: WorkflowRecoveryManager
) -> None:
    ops = EnhancedStateManager(pool)
    people = {
        role: await make_user(pool, role=role)
        for role in ("client", "manager", "junior_manager", "controller", "technician")
    }
    keeper = await make_user(pool, role="warehouse")
    admin_row = await make_user(pool, role="admin")
    admin = Actor.of(admin_row)
    cable = await pool.fetchval(
        "INSERT INTO materials (sku, name, balance) VALUES ('CBL', 'Cable', 0) RETURNING id"
    )
    await pool.execute(
        "INSERT INTO inventory_transactions (material_id, kind, quantity, idempotency_key) "
        "VALUES ($1, 'receipt', 100, 'receipt:1')",
        cable,
    )
    await pool.execute("UPDATE materials SET balance = 100 WHERE id = $1", cable)

    def actor(user: asyncpg.Record) -> Actor:
        return Actor(user["id"], user["role"])

    request = await ops.create_request(
        actor(people["client"]), workflow_type="connection", description="real flow"
    )
    for role in ("manager", "junior_manager", "controller"):
        request = await ops.advance(actor(people[role]), request["id"], request["version"])
    assert request["current_state"] == "in_work"
    tech = actor(people["technician"])
    await ops.use_materials(tech, request["id"], cable, 20, idempotency_key="use:tech:1")
    request = await ops.advance(tech, request["id"], request["version"])
    assert request["current_state"] == "materials"
    store = actor(keeper)
    use = await ops.use_materials(store, request["id"], cable, 15, idempotency_key="use:store:1")
    stamps = await pool.fetch(
        "SELECT idempotency_key, request_state FROM inventory_transactions "
        "WHERE kind = 'issue' ORDER BY id"
    )
    assert [(s["idempotency_key"], s["request_state"]) for s in stamps] == [
        ("use:tech:1", "in_work"),
        ("use:store:1", "materials"),
    ]

    first = await manager.apply(
        RecoveryAction.RESET, request["id"], expected_version=request["version"], admin=admin
    )
    assert [(r.issue_id, r.quantity) for r in first.reversals] == [(use.ledger_id, 15)]
    assert await pool.fetchval("SELECT balance FROM materials WHERE id = $1", cable) == 80

    second = await manager.apply(
        RecoveryAction.RESET, request["id"], expected_version=first.request["version"], admin=admin
    )
    assert second.request["current_state"] == "review"
    assert [r.quantity for r in second.reversals] == [20]
    assert await pool.fetchval("SELECT balance FROM materials WHERE id = $1", cable) == 100
    assert await _ledger_matches_balances(pool)
