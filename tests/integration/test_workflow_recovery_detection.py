"""Stuck detection: per-state deadlines, unreachable assignees, filters, pages, indexes, and
the digest alert once per newly stuck request."""

from __future__ import annotations

import asyncpg
import pytest

from database import stuck
from recovery.actors import Actor
from recovery.workflows import RecoveryAction, WorkflowRecoveryManager
from tests.factories import make_request, make_user
from tests.integration.workflow_recovery_support import add_transition

HOUR = 3600.0


async def test_each_state_has_its_own_deadline(pool: asyncpg.Pool) -> None:
    client = await make_user(pool)
    manager = WorkflowRecoveryManager(
        pool,
        default_threshold_s=24 * HOUR,
        thresholds={"connection:review": 1 * HOUR, "connection:in_work": 72 * HOUR},
    )

    async def req(state: str, role: str, hours: float, workflow_type: str = "connection") -> int:
        row = await make_request(
            pool,
            client_id=client["id"],
            workflow_type=workflow_type,
            state=state,
            role=role,
            hours_in_state=hours,
        )
        return row["id"]

    new_late = await req("new", "manager", 30)
    await req("new", "manager", 20)  # under the 24 h default
    review_late = await req("review", "controller", 2)  # over its 1 h deadline
    await req("in_work", "technician", 30)  # under its 72 h deadline
    in_work_late = await req("in_work", "technician", 80)
    await req("quality_check", "controller", 2, workflow_type="repair")
    repair_late = await req("new", "controller", 25, workflow_type="repair")
    done = await make_request(
        pool,
        client_id=client["id"],
        state="completed",
        role=None,
        status="completed",
        hours_in_state=500,
    )

    page = await manager.find_stuck(limit=20)

    assert [item.request_id for item in page.items] == [
        in_work_late,
        new_late,
        repair_late,
        review_late,
    ]
    assert page.total == 4
    by_id = {item.request_id: item for item in page.items}
    assert by_id[review_late].threshold_s == 1 * HOUR
    assert by_id[in_work_late].threshold_s == 72 * HOUR
    assert by_id[new_late].threshold_s == 24 * HOUR
    assert 79 * HOUR < by_id[in_work_late].stuck_for_s < 81 * HOUR
    assert all(item.reasons == ("over_deadline",) for item in page.items)
    assert done["id"] not in by_id


async def test_unreachable_assignee_is_stuck_whatever_the_time(pool: asyncpg.Pool) -> None:
    client = await make_user(pool)
    gone = await make_user(pool, role="technician", name="Gone Technician")
    blocked = await make_user(pool, role="technician", name="Blocked Technician")
    fine = await make_user(pool, role="technician", name="Fine Technician")
    await pool.execute("UPDATE users SET is_active = FALSE WHERE id = $1", gone["id"])
    await pool.execute("UPDATE users SET blocked_bot_at = now() WHERE id = $1", blocked["id"])

    async def held_by(user: asyncpg.Record, hours: float, status: str = "active") -> int:
        row = await make_request(
            pool,
            client_id=client["id"],
            state="in_work",
            role="technician",
            hours_in_state=hours,
            assignee_id=user["id"],
            status=status,
        )
        return row["id"]

    with_gone = await held_by(gone, 1)
    with_blocked = await held_by(blocked, 2)
    await held_by(fine, 3)
    await held_by(gone, 1, status="cancelled")
    late_and_gone = await held_by(gone, 30)
    manager = WorkflowRecoveryManager(pool, default_threshold_s=24 * HOUR)

    page = await manager.find_stuck(limit=10)

    by_id = {item.request_id: item for item in page.items}
    assert set(by_id) == {with_gone, with_blocked, late_and_gone}
    assert page.total == 3  # the late and unreachable one counts once
    assert by_id[with_gone].reasons == ("assignee_inactive",)
    assert by_id[with_gone].assignee_name == "Gone Technician"
    assert by_id[with_blocked].reasons == ("assignee_blocked",)
    assert by_id[with_blocked].assignee_name == "Blocked Technician"
    assert by_id[late_and_gone].reasons == ("over_deadline", "assignee_inactive")
    assert by_id[late_and_gone].reason == "assignee_inactive"
    assert [item.request_id for item in page.items] == [late_and_gone, with_blocked, with_gone]


async def test_filters_and_pages_cover_every_match_once(pool: asyncpg.Pool) -> None:
    client = await make_user(pool)
    gone = await make_user(pool, role="controller")
    await pool.execute("UPDATE users SET is_active = FALSE WHERE id = $1", gone["id"])
    expected: dict[tuple[str, str], list[int]] = {}
    for index in range(12):
        workflow_type, state, role = (
            ("connection", "review", "controller") if index % 3 else ("repair", "new", "controller")
        )
        row = await make_request(
            pool,
            client_id=client["id"],
            workflow_type=workflow_type,
            state=state,
            role=role,
            hours_in_state=30 + index,
        )
        expected.setdefault((workflow_type, state), []).append(row["id"])
    fresh_unreachable = await make_request(
        pool, client_id=client["id"], state="review", role="controller", assignee_id=gone["id"]
    )
    expected[("connection", "review")].append(fresh_unreachable["id"])
    manager = WorkflowRecoveryManager(pool)

    seen: list[int] = []
    for page_no in range(4):
        page = await manager.find_stuck(limit=5, offset=page_no * 5)
        assert page.total == 13
        seen += [item.request_id for item in page.items]
    assert sorted(seen) == sorted(i for ids in expected.values() for i in ids)
    assert len(seen) == len(set(seen)) == 13

    repair = await manager.find_stuck(workflow_type="repair", limit=20)
    assert {i.request_id for i in repair.items} == set(expected[("repair", "new")])
    assert repair.total == 4
    review = await manager.find_stuck(workflow_type="connection", state="review", limit=20)
    assert {i.request_id for i in review.items} == set(expected[("connection", "review")])
    assert review.total == 9
    assert (await manager.find_stuck(state="new", limit=20)).total == 4
    assert (await manager.find_stuck(workflow_type="repair", state="review", limit=20)).total == 0
    targets = await manager.stuck_targets(workflow_type="connection", state="review")
    assert [t[0] for t in targets] == [i.request_id for i in review.items]


async def test_unknown_state_in_thresholds_is_rejected(pool: asyncpg.Pool) -> None:
    with pytest.raises(ValueError, match="connection:nowhere"):
        WorkflowRecoveryManager(pool, thresholds={"connection:nowhere": 60})
    with pytest.raises(ValueError, match="positive"):
        WorkflowRecoveryManager(pool, thresholds={"repair:new": 0})


async def test_detection_is_served_by_indexes(pool: asyncpg.Pool) -> None:
    """50,000 requests over every state (80 % done, 1 % stuck), 1,000 staff of whom 10 are
    unreachable: the planner reads the partial indexes, never a whole table (the
    1,000,000-row plans are in bench/results/stuck_detection.md)."""
    client = await make_user(pool)
    await pool.execute(
        """
        INSERT INTO users (telegram_id, full_name, role, is_active)
        SELECT 70000000 + g, 'staff ' || g, 'technician', g % 100 <> 1
          FROM generate_series(1, 1000) g
        """
    )
    staff = await pool.fetchval("SELECT min(id) FROM users WHERE role = 'technician'")
    await pool.execute(
        """
        WITH pairs (n, workflow_type, state, role) AS (VALUES
            (0, 'connection', 'new', 'manager'), (1, 'connection', 'assigned', 'junior_manager'),
            (2, 'connection', 'review', 'controller'), (3, 'connection', 'in_work', 'technician'),
            (4, 'connection', 'materials', 'warehouse'),
            (5, 'connection', 'quality_check', 'controller'), (6, 'repair', 'new', 'controller'),
            (7, 'repair', 'in_work', 'technician'), (8, 'repair', 'materials', 'warehouse'),
            (9, 'repair', 'quality_check', 'controller'))
        INSERT INTO service_requests (workflow_type, client_id, current_state, owner_role,
                                      status, assignee_id, state_entered_at)
        SELECT p.workflow_type, $1,
               CASE WHEN g % 5 = 0 THEN p.state ELSE 'completed' END,
               CASE WHEN g % 5 = 0 THEN p.role END,
               CASE WHEN g % 5 = 0 THEN 'active' ELSE 'completed' END,
               $2::bigint + g % 1000,
               now() - CASE WHEN g % 100 = 5 THEN interval '30 hours' ELSE interval '1 hour' END
          FROM generate_series(1, 50000) g JOIN pairs p ON p.n = (g / 5) % 10
        """,
        client["id"],
        staff,
    )
    await pool.execute("ANALYZE service_requests")
    await pool.execute("ANALYZE users")
    manager = WorkflowRecoveryManager(pool)
    limits = manager.limits()
    args = (
        [limit.workflow_type for limit in limits],
        [limit.state for limit in limits],
        [limit.threshold_s for limit in limits],
        None,
        None,
    )
    plans = []
    for sql, extra in (
        (stuck.PAGE_SQL, (10, 10, 0)),
        (stuck.COUNT_SQL, ()),
        (stuck.TARGETS_SQL, (1000,)),
    ):
        rows = await pool.fetch("EXPLAIN " + sql, *args, *extra)
        plans.append("\n".join(r[0] for r in rows))
    for plan in plans:
        assert "Seq Scan on service_requests" not in plan, plan
        assert "ix_requests_active_type_state" in plan, plan
        assert "ix_users_unreachable" in plan, plan
    page = await manager.find_stuck(limit=10)
    unreachable_not_late = await pool.fetchval(
        "SELECT count(*) FROM service_requests r JOIN users u ON u.id = r.assignee_id "
        "WHERE r.status = 'active' AND NOT u.is_active "
        "AND r.state_entered_at > now() - interval '24 hours'"
    )
    assert unreachable_not_late > 0
    assert page.total == 500 + unreachable_not_late


async def test_digest_alerts_each_newly_stuck_request_once(pool: asyncpg.Pool) -> None:
    admin = await make_user(pool, role="admin")
    client = await make_user(pool)
    first = await make_request(pool, client_id=client["id"], hours_in_state=30)
    second = await make_request(pool, client_id=client["id"], hours_in_state=40)
    await make_request(pool, client_id=client["id"], hours_in_state=1)
    manager = WorkflowRecoveryManager(pool)
    extra_admin_chat = 42_000_001

    run1 = await manager.alert_new_stuck([extra_admin_chat])
    assert run1.new_request_ids == [second["id"], first["id"]]
    assert run1.digests == 2
    digests = await pool.fetch(
        "SELECT * FROM pending_notifications WHERE template_key = 'admin.stuck_digest' "
        "ORDER BY chat_id"
    )
    assert {d["chat_id"] for d in digests} == {admin["telegram_id"], extra_admin_chat}
    params = digests[0]["params"]
    assert (params["count"], params["ids"]) == (2, f"#{second['id']}, #{first['id']}")
    # each request's type, state and seconds in the state, longest stuck first
    assert [item[:3] for item in params["items"]] == [
        [second["id"], second["workflow_type"], second["current_state"]],
        [first["id"], first["workflow_type"], first["current_state"]],
    ]
    assert 40 * 3600 <= params["items"][0][3] < 41 * 3600

    run2 = await manager.alert_new_stuck([extra_admin_chat])
    assert (run2.new_request_ids, run2.digests) == ([], 0)

    third = await make_request(pool, client_id=client["id"], hours_in_state=25)
    run3 = await manager.alert_new_stuck([extra_admin_chat])
    assert run3.new_request_ids == [third["id"]]
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM pending_notifications WHERE template_key = 'admin.stuck_digest'"
        )
        == 4
    )

    # the first request is repaired (moves on), then gets stuck again in its next state
    await add_transition(pool, first["id"], None, "new", kind="create")
    await manager.apply(
        RecoveryAction.FORCE,
        first["id"],
        expected_version=first["version"],
        admin=Actor(admin["id"], "admin", 1),
    )
    run4 = await manager.alert_new_stuck()
    assert run4.new_request_ids == []
    assert run4.forgotten == 1
    await pool.execute(
        "UPDATE service_requests SET state_entered_at = now() - interval '30 hours' WHERE id = $1",
        first["id"],
    )
    run5 = await manager.alert_new_stuck()
    assert run5.new_request_ids == [first["id"]]
    assert RecoveryAction.FORCE.transition_kind == "force"
