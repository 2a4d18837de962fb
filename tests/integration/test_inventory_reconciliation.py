"""Inventory reconciliation against a real PostgreSQL: every discrepancy kind is detected,
a dry run changes nothing, a fix writes the correction and the log, a second run is clean;
policy, acceptance and the admin operations."""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import asyncpg
import pydantic
import pytest

from bot.scheduler import reconcile_inventory
from bot.settings import Settings
from database import demo_data
from recovery.actors import Actor
from recovery.exceptions import (
    ConcurrentModificationError,
    InputValidationError,
    NotFoundError,
)
from recovery.inventory import DiscrepancyKind, InventoryReconciliationManager, ReconciliationPolicy

GRACE_S = 3600.0
ADMIN = Actor(user_id=None, role="admin", telegram_id=42)
ADMIN_STORED = "admin:42"  # what the log and the discrepancy store for ADMIN
_keys = itertools.count()


# --- seeding helpers (test setup writes rows directly, as an import or corruption would) ---


async def make_user(pool: asyncpg.Pool) -> int:
    return await pool.fetchval(
        "INSERT INTO users (telegram_id, full_name) VALUES ($1, 'client') RETURNING id",
        1000 + next(_keys),
    )


async def make_request(
    pool: asyncpg.Pool,
    *,
    state: str = "in_work",
    status: str = "active",
    reached: tuple[str, ...] = (),
) -> int:
    """A repair request in ``state``; ``reached``: states it passed through before."""
    client = await make_user(pool)
    request_id = await pool.fetchval(
        "INSERT INTO service_requests (workflow_type, client_id, current_state, status) "
        "VALUES ('repair', $1, $2, $3) RETURNING id",
        client,
        state,
        status,
    )
    previous = None
    for to_state in ("new", *reached, state):
        if to_state == previous:
            continue
        await pool.execute(
            "INSERT INTO workflow_transitions (request_id, from_state, to_state, kind) "
            "VALUES ($1, $2, $3, $4)",
            request_id,
            previous,
            to_state,
            "create" if previous is None else "normal",
        )
        previous = to_state
    return request_id


async def make_material(pool: asyncpg.Pool, received: int = 100, balance: int | None = None) -> int:
    """A material with one receipt; balance = received unless given (drift)."""
    material_id = await pool.fetchval(
        "INSERT INTO materials (sku, name, balance) VALUES ($1, 'm', $2) RETURNING id",
        f"SKU-{next(_keys)}",
        received if balance is None else balance,
    )
    if received:
        await ledger_row(pool, material_id, "receipt", received)
    return material_id


async def ledger_row(
    pool: asyncpg.Pool,
    material_id: int,
    kind: str,
    quantity: int,
    *,
    request_id: int | None = None,
    age_s: float = 0.0,
    external_reference: str | None = None,
    move_balance: bool = False,
) -> int:
    """Insert a ledger row ``age_s`` seconds old; with ``move_balance`` the balance moves by
    the same quantity (a consistent movement), otherwise only the ledger changes."""
    row_id = await pool.fetchval(
        "INSERT INTO inventory_transactions (material_id, kind, quantity, request_id, "
        "idempotency_key, external_reference, created_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, now() - make_interval(secs => $7)) RETURNING id",
        material_id,
        kind,
        quantity,
        request_id,
        f"test:{next(_keys)}",
        external_reference,
        age_s,
    )
    if move_balance:
        await pool.execute(
            "UPDATE materials SET balance = balance + $2 WHERE id = $1", material_id, quantity
        )
    return row_id


async def balance_and_ledger(pool: asyncpg.Pool, material_id: int) -> tuple[int, int]:
    row = await pool.fetchrow(
        "SELECT balance, (SELECT COALESCE(sum(quantity), 0) FROM inventory_transactions "
        "WHERE material_id = $1)::bigint AS ledger FROM materials WHERE id = $1",
        material_id,
    )
    return int(row["balance"]), int(row["ledger"])


async def snapshot(pool: asyncpg.Pool) -> dict[str, list[Any]]:
    """Every row of the tables reconciliation may write."""
    tables = (
        "materials",
        "inventory_transactions",
        "inventory_reconciliation_log",
        "inventory_discrepancies",
    )
    return {
        t: [tuple(r) for r in await pool.fetch(f"SELECT * FROM {t} ORDER BY id")] for t in tables
    }


def manager(pool: asyncpg.Pool, **policy: Any) -> InventoryReconciliationManager:
    return InventoryReconciliationManager(
        pool, ReconciliationPolicy(orphan_grace_s=GRACE_S, **policy), chunk_size=3
    )


# --- one scenario per discrepancy kind ----------------------------------------------------


@dataclass
class Scenario:
    """A seeded discrepancy and what its fix must do."""

    material_id: int
    kind: DiscrepancyKind
    amount: int  # the signed correction the discrepancy reports
    ledger_row: int | None  # quantity of the ledger row the fix writes (None: none)
    reverses_id: int | None = None
    request_id: int | None = None
    final: int | None = None  # balance (= ledger) after the fix


async def drift(pool: asyncpg.Pool) -> Scenario:
    material = await make_material(pool, received=100, balance=115)
    request = await make_request(pool)
    await ledger_row(pool, material, "issue", -30, request_id=request, move_balance=True)
    return Scenario(material, DiscrepancyKind.DRIFT, amount=-15, ledger_row=None, final=70)


async def negative_balance(pool: asyncpg.Pool) -> Scenario:
    material = await make_material(pool, received=10, balance=-5)
    return Scenario(material, DiscrepancyKind.NEGATIVE_BALANCE, 15, ledger_row=None, final=10)


async def negative_ledger(pool: asyncpg.Pool) -> Scenario:
    material = await make_material(pool, received=25, balance=25)
    request = await make_request(pool)
    await ledger_row(pool, material, "issue", -27, request_id=request, move_balance=True)
    return Scenario(material, DiscrepancyKind.NEGATIVE_LEDGER, 2, ledger_row=2, final=0)


async def orphan_cancelled(pool: asyncpg.Pool) -> Scenario:
    material = await make_material(pool, received=50)
    request = await make_request(pool, state="in_work", status="cancelled")
    issue = await ledger_row(
        pool, material, "issue", -8, request_id=request, age_s=2 * GRACE_S, move_balance=True
    )
    return Scenario(
        material,
        DiscrepancyKind.ORPHANED_TRANSACTION,
        8,
        ledger_row=8,
        reverses_id=issue,
        request_id=request,
        final=50,
    )


async def orphan_missing_request(pool: asyncpg.Pool) -> Scenario:
    material = await make_material(pool, received=50)
    gone = 10_000_000 + next(_keys)
    issue = await ledger_row(
        pool, material, "issue", -4, request_id=gone, age_s=2 * GRACE_S, move_balance=True
    )
    return Scenario(
        material,
        DiscrepancyKind.ORPHANED_TRANSACTION,
        4,
        ledger_row=4,
        reverses_id=issue,
        request_id=gone,
        final=50,
    )


async def orphan_never_in_material_state(pool: asyncpg.Pool) -> Scenario:
    material = await make_material(pool, received=50)
    request = await make_request(pool, state="new")
    issue = await ledger_row(
        pool, material, "issue", -6, request_id=request, age_s=2 * GRACE_S, move_balance=True
    )
    return Scenario(
        material,
        DiscrepancyKind.ORPHANED_TRANSACTION,
        6,
        ledger_row=6,
        reverses_id=issue,
        request_id=request,
        final=50,
    )


async def duplicate_reference(pool: asyncpg.Pool) -> Scenario:
    material = await make_material(pool, received=0, balance=0)
    await ledger_row(pool, material, "receipt", 40, external_reference="DN-7/1", move_balance=True)
    dup = await ledger_row(
        pool, material, "receipt", 40, external_reference="DN-7/1", move_balance=True
    )
    return Scenario(
        material,
        DiscrepancyKind.DUPLICATE_REFERENCE,
        -40,
        ledger_row=-40,
        reverses_id=dup,
        final=40,
    )


SCENARIOS: dict[str, Callable[[asyncpg.Pool], Awaitable[Scenario]]] = {
    "drift": drift,
    "negative_balance": negative_balance,
    "negative_ledger": negative_ledger,
    "orphan_cancelled": orphan_cancelled,
    "orphan_missing_request": orphan_missing_request,
    "orphan_never_in_material_state": orphan_never_in_material_state,
    "duplicate_reference": duplicate_reference,
}


async def healthy_background(pool: asyncpg.Pool) -> list[int]:
    """Materials that agree with their ledger, with issues and returns for valid requests."""
    request = await make_request(pool, state="in_work")
    completed = await make_request(
        pool, state="completed", status="completed", reached=("in_work",)
    )
    reset_back = await make_request(pool, state="new", reached=("in_work",))
    ids = []
    for req in (request, completed, reset_back):
        material = await make_material(pool, received=20)
        await ledger_row(pool, material, "issue", -5, request_id=req, age_s=9e5, move_balance=True)
        await ledger_row(pool, material, "return", 2, request_id=req, age_s=9e5, move_balance=True)
        ids.append(material)
    # fully returned materials of a cancelled request are not orphaned
    cancelled = await make_request(pool, state="in_work", status="cancelled")
    material = await make_material(pool, received=20)
    await ledger_row(
        pool, material, "issue", -5, request_id=cancelled, age_s=9e5, move_balance=True
    )
    await ledger_row(
        pool, material, "return", 5, request_id=cancelled, age_s=9e5, move_balance=True
    )
    ids.append(material)
    return ids


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_discrepancy_detected_dry_run_fixed_logged_and_second_run_clean(
    pool: asyncpg.Pool, name: str
) -> None:
    background = await healthy_background(pool)
    scenario = await SCENARIOS[name](pool)
    recon = manager(pool)

    # detected
    dry = await recon.run(dry_run=True, kinds=set(DiscrepancyKind))
    assert [(d.kind, d.material_id, d.amount) for d in dry.discrepancies] == [
        (scenario.kind, scenario.material_id, scenario.amount)
    ]
    assert dry.discrepancies[0].request_id == scenario.request_id
    before_b, before_l = await balance_and_ledger(pool, scenario.material_id)
    assert (dry.discrepancies[0].balance, dry.discrepancies[0].ledger_sum) == (before_b, before_l)

    # a dry run changes nothing
    state = await snapshot(pool)
    await recon.run(dry_run=True, kinds=set(DiscrepancyKind))
    assert await snapshot(pool) == state

    # fix applied (by the admin's "fix all", which fixes every kind)
    ledger_ids = {r["id"] for r in await pool.fetch("SELECT id FROM inventory_transactions")}
    report = await recon.fix_all(ADMIN)
    assert not report.failed
    assert [(o.kind, o.material_id) for o in report.fixed] == [
        (scenario.kind, scenario.material_id)
    ]
    balance, ledger = await balance_and_ledger(pool, scenario.material_id)
    assert balance == ledger == scenario.final
    new_rows = await pool.fetch(
        "SELECT * FROM inventory_transactions WHERE id <> ALL ($1::bigint[])", list(ledger_ids)
    )
    if scenario.ledger_row is None:
        assert new_rows == []
    else:
        assert len(new_rows) == 1
        row = new_rows[0]
        assert (row["kind"], row["quantity"], row["material_id"]) == (
            "adjustment",
            scenario.ledger_row,
            scenario.material_id,
        )
        assert row["reverses_id"] == scenario.reverses_id
        assert row["request_id"] == scenario.request_id
    # every other material untouched
    for material in background:
        b, l_ = await balance_and_ledger(pool, material)
        assert b == l_

    # log written
    logs = await pool.fetch("SELECT * FROM inventory_reconciliation_log")
    assert len(logs) == 1
    entry = logs[0]
    assert entry["discrepancy"] == str(scenario.kind)
    assert entry["action"] == (
        "adjusted"
        if scenario.ledger_row is None or scenario.kind is DiscrepancyKind.NEGATIVE_LEDGER
        else "reversed"
    )
    assert entry["actor"] == ADMIN_STORED
    assert entry["before_value"] == {"balance": before_b, "ledger_sum": before_l}
    assert entry["after_value"] == {"balance": scenario.final, "ledger_sum": scenario.final}
    assert entry["transaction_id"] == (new_rows[0]["id"] if new_rows else None)
    assert entry["run_id"] == report.run_id
    disc = await recon.get(entry["discrepancy_id"])
    assert (disc.status, disc.closed_by, disc.kind) == ("fixed", ADMIN_STORED, scenario.kind)

    # a second run right after finds nothing
    again = await recon.run(dry_run=True, kinds=set(DiscrepancyKind))
    assert again.discrepancies == []
    again = await recon.fix_all(ADMIN)
    assert again.discrepancies == [] and again.fixed == []
    assert (await recon.list_open()).total == 0


async def test_orphan_inside_the_grace_period_is_not_reported(pool: asyncpg.Pool) -> None:
    material = await make_material(pool, received=50)
    request = await make_request(pool, state="in_work", status="cancelled")
    await ledger_row(
        pool, material, "issue", -8, request_id=request, age_s=GRACE_S / 2, move_balance=True
    )
    assert (await manager(pool).run(dry_run=True)).discrepancies == []
    # the same row, once older than the grace period, is an orphan
    await pool.execute(
        "UPDATE inventory_transactions SET created_at = now() - interval '2 hours' "
        "WHERE request_id = $1",
        request,
    )
    found = (await manager(pool).run(dry_run=True)).discrepancies
    assert [(d.kind, d.amount) for d in found] == [(DiscrepancyKind.ORPHANED_TRANSACTION, 8)]


async def test_orphan_fix_reverses_only_the_unreturned_net(pool: asyncpg.Pool) -> None:
    material = await make_material(pool, received=50)
    request = await make_request(pool, state="review", status="cancelled")
    for quantity, kind in ((-5, "issue"), (-4, "issue"), (3, "return")):
        await ledger_row(
            pool, material, kind, quantity, request_id=request, age_s=2 * GRACE_S, move_balance=True
        )
    recon = manager(pool)
    (orphan,) = (await recon.run(dry_run=True)).discrepancies
    assert (orphan.amount, orphan.details["issue_count"], orphan.details["reason"]) == (
        6,
        2,
        "cancelled",
    )
    report = await recon.auto_fix()
    (outcome,) = report.fixed
    row = await pool.fetchrow(
        "SELECT quantity, reverses_id, request_id FROM inventory_transactions WHERE id = $1",
        outcome.transaction_id,
    )
    # two issues: the reversal is of the net, not of one row
    assert (row["quantity"], row["reverses_id"], row["request_id"]) == (6, None, request)
    assert await balance_and_ledger(pool, material) == (50, 50)
    assert (await recon.run(dry_run=True)).discrepancies == []


async def test_default_policy_fixes_drift_and_orphans_and_leaves_the_rest_to_an_admin(
    pool: asyncpg.Pool,
) -> None:
    drifted = await drift(pool)
    orphan = await orphan_cancelled(pool)
    negative = await negative_ledger(pool)
    dup = await duplicate_reference(pool)
    recon = manager(pool)

    report = await recon.auto_fix()
    assert {(o.kind, o.material_id) for o in report.fixed} == {
        (DiscrepancyKind.DRIFT, drifted.material_id),
        (DiscrepancyKind.ORPHANED_TRANSACTION, orphan.material_id),
    }
    assert {(d.kind, d.material_id) for d in report.waiting} == {
        (DiscrepancyKind.NEGATIVE_LEDGER, negative.material_id),
        (DiscrepancyKind.DUPLICATE_REFERENCE, dup.material_id),
    }
    assert {
        r["actor"] for r in await pool.fetch("SELECT actor FROM inventory_reconciliation_log")
    } == {"scheduler"}
    page = await recon.list_open()
    assert page.total == 2
    assert {(d.kind, d.material_id) for d in page.items} == {
        (DiscrepancyKind.NEGATIVE_LEDGER, negative.material_id),
        (DiscrepancyKind.DUPLICATE_REFERENCE, dup.material_id),
    }
    assert await recon.open_counts() == {"negative_ledger": 1, "duplicate_reference": 1}
    # the hourly job again: still waiting, nothing fixed twice
    again = await recon.auto_fix()
    assert again.fixed == [] and len(again.waiting) == 2
    assert (await recon.list_open()).total == 2

    # an admin fixes one of them
    neg_item = next(d for d in page.items if d.kind is DiscrepancyKind.NEGATIVE_LEDGER)
    outcome = await recon.fix_one(neg_item.id, ADMIN)
    assert (outcome.action, outcome.amount, outcome.after) == (
        "adjusted",
        2,
        {"balance": 0, "ledger_sum": 0},
    )
    assert (await recon.get(neg_item.id)).status == "fixed"
    with pytest.raises(ConcurrentModificationError):
        await recon.fix_one(neg_item.id, ADMIN)
    assert [d.kind for d in (await recon.list_open()).items] == [
        DiscrepancyKind.DUPLICATE_REFERENCE
    ]


async def test_configured_policy_changes_what_the_job_fixes(pool: asyncpg.Pool) -> None:
    drifted = await drift(pool)
    dup = await duplicate_reference(pool)
    recon = manager(pool, auto_fix=frozenset({DiscrepancyKind.DUPLICATE_REFERENCE}))
    report = await recon.auto_fix()
    assert [(o.kind, o.material_id) for o in report.fixed] == [
        (DiscrepancyKind.DUPLICATE_REFERENCE, dup.material_id)
    ]
    assert [(d.kind, d.material_id) for d in report.waiting] == [
        (DiscrepancyKind.DRIFT, drifted.material_id)
    ]


def test_settings_policy_parses_kinds_and_rejects_unknown_ones() -> None:
    settings = Settings(inventory_auto_fix_kinds="drift, duplicate_reference")
    policy = ReconciliationPolicy.of(settings.inventory_auto_fix_kinds, 60)
    assert policy.auto_fix == {DiscrepancyKind.DRIFT, DiscrepancyKind.DUPLICATE_REFERENCE}
    assert Settings(inventory_auto_fix_kinds="").inventory_auto_fix_kinds == []
    assert set(Settings().inventory_auto_fix_kinds) == {
        "drift",
        "negative_balance",
        "orphaned_transaction",
    }
    with pytest.raises(pydantic.ValidationError):
        Settings(inventory_auto_fix_kinds="drift,everything")
    with pytest.raises(ValueError):
        ReconciliationPolicy(orphan_grace_s=-1)


async def test_orphan_fix_runs_before_the_material_check_and_resolves_a_negative_ledger(
    pool: asyncpg.Pool,
) -> None:
    material = await make_material(pool, received=5)
    cancelled = await make_request(pool, state="in_work", status="cancelled")
    await ledger_row(pool, material, "issue", -8, request_id=cancelled, age_s=2 * GRACE_S)
    await pool.execute("UPDATE materials SET balance = 0 WHERE id = $1", material)
    recon = manager(pool)
    kinds = {d.kind for d in (await recon.check_now(ADMIN)).discrepancies}
    assert kinds == {DiscrepancyKind.NEGATIVE_LEDGER, DiscrepancyKind.ORPHANED_TRANSACTION}
    report = await recon.auto_fix()
    # the reversal (+8) takes the ledger to 5; then only drift is left (balance 0 -> 8 -> 5)
    assert [o.kind for o in report.fixed] == [
        DiscrepancyKind.ORPHANED_TRANSACTION,
        DiscrepancyKind.DRIFT,
    ]
    assert await balance_and_ledger(pool, material) == (5, 5)
    statuses = await pool.fetch(
        "SELECT kind, status FROM inventory_discrepancies WHERE material_id = $1 ORDER BY id",
        material,
    )
    assert [(r["kind"], r["status"]) for r in statuses] == [
        ("drift", "fixed"),  # the material row: first seen as negative_ledger, fixed as drift
        ("orphaned_transaction", "fixed"),
    ]
    assert (await recon.run(dry_run=True, kinds=set(DiscrepancyKind))).discrepancies == []


async def test_accepted_discrepancy_is_not_listed_nor_fixed_until_it_changes(
    pool: asyncpg.Pool,
) -> None:
    scenario = await drift(pool)
    recon = manager(pool)
    (found,) = (await recon.check_now(ADMIN)).discrepancies
    with pytest.raises(InputValidationError):
        await recon.accept(found.id, ADMIN, "  ")
    accepted = await recon.accept(found.id, ADMIN, "stock count pending")
    assert (accepted.status, accepted.reason, accepted.closed_by) == (
        "accepted",
        "stock count pending",
        ADMIN_STORED,
    )
    log_row = await pool.fetchrow(
        "SELECT * FROM inventory_reconciliation_log WHERE action = 'accepted'"
    )
    assert (log_row["discrepancy_id"], log_row["reason"], log_row["actor"]) == (
        found.id,
        "stock count pending",
        ADMIN_STORED,
    )
    with pytest.raises(ConcurrentModificationError):
        await recon.accept(found.id, ADMIN, "again")

    report = await recon.fix_all(ADMIN)
    assert (report.discrepancies, report.fixed, report.accepted) == ([], [], 1)
    assert (await recon.list_open()).total == 0
    assert await balance_and_ledger(pool, scenario.material_id) == (85, 70)

    # a movement moves both sides: the accepted drift is unchanged and stays accepted
    await ledger_row(pool, scenario.material_id, "receipt", 10, move_balance=True)
    assert (await recon.run(dry_run=True)).discrepancies == []
    # the drift grows: a new discrepancy, fixed as usual
    await pool.execute(
        "UPDATE materials SET balance = balance + 1 WHERE id = $1", scenario.material_id
    )
    report = await recon.auto_fix()
    assert [(o.kind, o.amount) for o in report.fixed] == [(DiscrepancyKind.DRIFT, -16)]
    assert await balance_and_ledger(pool, scenario.material_id) == (80, 80)


async def test_fix_one_of_a_discrepancy_gone_meanwhile_is_skipped_and_resolved(
    pool: asyncpg.Pool,
) -> None:
    scenario = await drift(pool)
    recon = manager(pool)
    (found,) = (await recon.check_now(ADMIN)).discrepancies
    # someone corrects the balance by hand before the admin presses "fix"
    await pool.execute("UPDATE materials SET balance = 70 WHERE id = $1", scenario.material_id)
    outcome = await recon.fix_one(found.id, ADMIN)
    assert outcome.action == "skipped"
    assert (await recon.get(found.id)).status == "resolved"
    entry = await pool.fetchrow("SELECT * FROM inventory_reconciliation_log")
    assert (entry["action"], entry["reason"]) == ("skipped", "no longer present")
    with pytest.raises(NotFoundError):
        await recon.fix_one(999_999, ADMIN)


async def test_fix_one_uses_the_values_read_under_the_lock(pool: asyncpg.Pool) -> None:
    scenario = await drift(pool)  # balance 15 above the ledger
    recon = manager(pool)
    (found,) = (await recon.check_now(ADMIN)).discrepancies
    await pool.execute(
        "UPDATE materials SET balance = balance + 5 WHERE id = $1", scenario.material_id
    )
    outcome = await recon.fix_one(found.id, ADMIN)
    assert (outcome.action, outcome.amount) == ("adjusted", -20)
    assert await balance_and_ledger(pool, scenario.material_id) == (70, 70)


async def test_a_failing_material_is_logged_and_the_others_are_fixed(pool: asyncpg.Pool) -> None:
    dup = await duplicate_reference(pool)
    drifted = await drift(pool)
    # the correction key of the duplicate's fix is already taken: its insert fails (23505)
    other = await make_material(pool, received=1)
    await pool.execute(
        "INSERT INTO inventory_transactions (material_id, kind, quantity, idempotency_key) "
        "VALUES ($1, 'receipt', 1, $2)",
        other,
        f"reconcile:duplicate:{dup.reverses_id}",
    )
    await pool.execute("UPDATE materials SET balance = 2 WHERE id = $1", other)
    report = await manager(pool).fix_all(ADMIN)
    assert [(o.material_id, o.action, o.error) for o in report.failed] == [
        (dup.material_id, "failed", "UniqueViolationError")
    ]
    assert {o.material_id for o in report.fixed} == {drifted.material_id}
    # the failed material's transaction left nothing behind
    assert await balance_and_ledger(pool, dup.material_id) == (80, 80)
    failed = await pool.fetchrow(
        "SELECT * FROM inventory_reconciliation_log WHERE action = 'failed'"
    )
    assert (failed["material_id"], failed["discrepancy"], failed["reason"]) == (
        dup.material_id,
        "duplicate_reference",
        "UniqueViolationError",
    )
    assert (await manager(pool).list_open()).total == 1


async def test_progress_is_reported_per_chunk_and_per_fixed_material(pool: asyncpg.Pool) -> None:
    for _ in range(5):
        await make_material(pool, received=3, balance=4)
    calls: list[tuple[int, int]] = []

    async def progress(done: int, total: int) -> None:
        calls.append((done, total))

    recon = InventoryReconciliationManager(pool, chunk_size=2)
    report = await recon.auto_fix(progress=progress)
    assert len(report.fixed) == 5
    detection, fixing = calls[:4], calls[4:]
    assert detection == [(0, 5), (2, 5), (4, 5), (5, 5)]
    assert fixing == [(i, 5) for i in range(6)]


async def test_demo_data_negative_and_drifted_materials(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await demo_data.seed(conn, [])
    recon = InventoryReconciliationManager(pool)
    found = {(d.sku, d.kind, d.amount) for d in (await recon.run(dry_run=True)).discrepancies}
    assert found == {
        ("ONT-GPON", DiscrepancyKind.NEGATIVE_LEDGER, 2),
        ("CON-RJ45", DiscrepancyKind.DRIFT, 15),
    }
    # the scheduler's job: drift fixed, the negative ledger waits for an admin
    result = await reconcile_inventory(SimpleNamespace(inventory=recon))  # type: ignore[arg-type]
    assert (result["fixed"], result["waiting_for_admin"]) == (1, 1)
    assert [d.sku for d in (await recon.list_open()).items] == ["ONT-GPON"]
