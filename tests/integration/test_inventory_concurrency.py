"""Reconciliation running while 20 tasks take the same material for a request through the
production path (``EnhancedStateManager.use_materials``): the final balance equals the ledger
sum and no movement is lost (a real PostgreSQL, real concurrency).

While the tasks run, a "corruptor" keeps adding to the balance behind the ledger's back and
the reconciler keeps fixing that drift (and reverses an orphaned issue), so its writes race
with the movements. Every change of the balance is accounted for exactly:

    balance = initial balance + task movements + corruption + reconciliation corrections

where the reconciliation corrections are read from ``inventory_reconciliation_log``. A fix
that overwrote a concurrent movement (read outside the lock, absolute write) breaks it.
"""

from __future__ import annotations

import asyncio

import asyncpg

from database.pool import create_pool
from recovery.actors import Actor
from recovery.inventory import DiscrepancyKind, InventoryReconciliationManager, ReconciliationPolicy
from recovery.state_manager import EnhancedStateManager
from tests.factories import receive

TASKS = 20
ROUNDS = 15
ISSUE = -3


async def test_reconciliation_during_concurrent_issue_and_return_loses_no_movement(
    database_url: str,
) -> None:
    pool = await create_pool(database_url, min_size=2, max_size=TASKS + 4)
    try:
        await _run(pool)
    finally:
        await pool.close()


async def _run(pool: asyncpg.Pool) -> None:
    client = await pool.fetchval(
        "INSERT INTO users (telegram_id, full_name) VALUES (1, 'c') RETURNING id"
    )
    admin = await pool.fetchval(
        "INSERT INTO users (telegram_id, full_name, role) VALUES (2, 'a', 'admin') RETURNING id"
    )
    request = await pool.fetchval(
        "INSERT INTO service_requests (workflow_type, client_id, current_state) "
        "VALUES ('repair', $1, 'in_work') RETURNING id",
        client,
    )
    cancelled = await pool.fetchval(
        "INSERT INTO service_requests (workflow_type, client_id, current_state, status) "
        "VALUES ('repair', $1, 'in_work', 'cancelled') RETURNING id",
        client,
    )
    material = await pool.fetchval(
        "INSERT INTO materials (sku, name, balance) VALUES ('CBL', 'cable', 0) RETURNING id"
    )
    async with pool.acquire() as conn, conn.transaction():
        await receive(conn, material_id=material, quantity=1000, idempotency_key="r:1")
        # an old issue for a cancelled request: the reconciler reverses it during the race
        await conn.execute(
            "INSERT INTO inventory_transactions "
            "(material_id, kind, quantity, request_id, idempotency_key) "
            "VALUES ($1, 'issue', -7, $2, 'orphan:1')",
            material,
            cancelled,
        )
        await conn.execute("UPDATE materials SET balance = balance - 7 WHERE id = $1", material)
    await pool.execute(
        "UPDATE inventory_transactions SET created_at = now() - interval '1 day' "
        "WHERE idempotency_key = 'orphan:1'"
    )
    initial_balance = await pool.fetchval("SELECT balance FROM materials WHERE id = $1", material)
    initial_ledger = 1000 - 7
    assert initial_balance == initial_ledger

    recon = InventoryReconciliationManager(pool, ReconciliationPolicy(orphan_grace_s=60))
    stop = asyncio.Event()
    injected = 0
    runs = 0

    async def corruptor() -> None:
        nonlocal injected
        while not stop.is_set():
            await pool.execute("UPDATE materials SET balance = balance + 1 WHERE id = $1", material)
            injected += 1
            await asyncio.sleep(0.002)

    async def reconciler() -> None:
        nonlocal runs
        while not stop.is_set():
            await recon.auto_fix()
            runs += 1

    applied: list[int] = []

    manager = EnhancedStateManager(pool)
    actor = Actor(admin, "admin")

    async def worker(n: int) -> None:
        for r in range(ROUNDS):
            use = await manager.use_materials(
                actor, request, material, -ISSUE, idempotency_key=f"task:{n}:{r}:issue"
            )
            assert not use.duplicate
            applied.append(ISSUE)

    background = [asyncio.create_task(corruptor()), asyncio.create_task(reconciler())]
    await asyncio.gather(*(worker(n) for n in range(TASKS)))
    stop.set()
    await asyncio.gather(*background)

    # no movement lost from the ledger
    task_rows = await pool.fetch(
        "SELECT quantity FROM inventory_transactions WHERE idempotency_key LIKE 'task:%'"
    )
    task_net = TASKS * ROUNDS * ISSUE
    assert len(task_rows) == len(applied) == TASKS * ROUNDS
    assert sum(r["quantity"] for r in task_rows) == sum(applied) == task_net

    # every change of balance and ledger is accounted for
    logs = await pool.fetch(
        "SELECT discrepancy, before_value, after_value FROM inventory_reconciliation_log "
        "WHERE action IN ('adjusted', 'reversed')"
    )
    balance_fixes = sum(r["after_value"]["balance"] - r["before_value"]["balance"] for r in logs)
    ledger_fixes = sum(
        r["after_value"]["ledger_sum"] - r["before_value"]["ledger_sum"] for r in logs
    )
    correction_rows = await pool.fetchval(
        "SELECT COALESCE(sum(quantity), 0) FROM inventory_transactions "
        "WHERE idempotency_key LIKE 'reconcile:%'"
    )
    assert ledger_fixes == correction_rows == 7  # the orphan's reversal, once
    balance, ledger = await _balance_and_ledger(pool, material)
    assert ledger == initial_ledger + task_net + ledger_fixes
    assert balance == initial_balance + task_net + injected + balance_fixes
    # the race was exercised: drift was injected and fixed while the tasks ran
    assert runs >= 1 and injected >= 1
    assert any(r["discrepancy"] == str(DiscrepancyKind.DRIFT) for r in logs)
    assert any(r["discrepancy"] == str(DiscrepancyKind.ORPHANED_TRANSACTION) for r in logs)

    # once the corruption stops, one run leaves the balance equal to the ledger sum
    await recon.auto_fix()
    balance, ledger = await _balance_and_ledger(pool, material)
    assert balance == ledger == initial_ledger + task_net + 7
    assert (await recon.run(dry_run=True, kinds=set(DiscrepancyKind))).discrepancies == []


async def _balance_and_ledger(pool: asyncpg.Pool, material: int) -> tuple[int, int]:
    row = await pool.fetchrow(
        "SELECT balance, (SELECT sum(quantity) FROM inventory_transactions "
        "WHERE material_id = $1)::bigint AS ledger FROM materials WHERE id = $1",
        material,
    )
    return int(row["balance"]), int(row["ledger"])
