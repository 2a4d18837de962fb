"""EnhancedStateManager against a real PostgreSQL: the operations, their refusals, a
failure injected at each step (no partial state, no outbox row, one rolled_back audit row),
transient failures and a killed backend in the middle of a transition (retried, applied
once), a lost COMMIT answer, nesting in an outer transaction, and the health figures."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from database import ledger, users
from database.pool import create_pool
from recovery.actors import Actor
from recovery.exceptions import (
    ConcurrentModificationError,
    InputValidationError,
    InsufficientStockError,
    InvalidTransitionError,
    NotFoundError,
    PermissionDeniedError,
)
from recovery.state_manager import EnhancedStateManager
from recovery.transaction_context import AFTER_COMMIT
from recovery.transactions import TransactionContext, TransactionRetryPolicy
from recovery.workflows import RecoveryAction, WorkflowRecoveryManager
from tests.factories import receive
from tests.state_steps import STEPS

FAST = TransactionRetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.005)
TABLES = (
    "service_requests",
    "workflow_transitions",
    "pending_notifications",
    "materials",
    "inventory_transactions",
)


@dataclass
class World:
    """One user per role (two managers and two technicians) and their actors."""

    client: Actor
    manager: Actor
    manager2: Actor
    controller: Actor
    technician: Actor
    technician2: Actor
    warehouse: Actor
    admin: Actor


async def make_world(pool: asyncpg.Pool) -> World:
    specs = [
        ("client", "client"),
        ("manager", "manager"),
        ("manager2", "manager"),
        ("controller", "controller"),
        ("technician", "technician"),
        ("technician2", "technician"),
        ("warehouse", "warehouse"),
        ("admin", "admin"),
    ]
    actors = {}
    for index, (name, role) in enumerate(specs):
        row = await users.upsert_from_telegram(
            pool, telegram_id=1000 + index, full_name=name, username=None, language="en", role=role
        )
        actors[name] = Actor.of(row)
    return World(**actors)


async def make_material(pool: asyncpg.Pool, sku: str, stock: int) -> int:
    async with pool.acquire() as conn, conn.transaction():
        material_id = await conn.fetchval(
            "INSERT INTO materials (sku, name) VALUES ($1, $1) RETURNING id", sku
        )
        if stock:
            await receive(
                conn, material_id=material_id, quantity=stock, idempotency_key=f"receipt:{sku}"
            )
    return material_id


async def snapshot(pool: asyncpg.Pool) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table: [tuple(row) for row in await pool.fetch(f"SELECT * FROM {table} ORDER BY id")]
        for table in TABLES
    }


async def log_rows(pool: asyncpg.Pool, after_id: int = 0) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM transaction_log WHERE id > $1 ORDER BY id", after_id)


async def last_log_id(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT coalesce(max(id), 0) FROM transaction_log")


async def repair_in_work(manager: EnhancedStateManager, world: World) -> asyncpg.Record:
    """A repair request moved to ``in_work`` (owned by technicians)."""
    request = await manager.create_request(
        world.client, workflow_type="repair", description="leaking pipe"
    )
    return await manager.advance(world.controller, request["id"], request["version"])


async def reassign(
    manager: EnhancedStateManager,
    admin: Actor,
    request_id: int,
    version: int,
    assignee_id: int | None,
) -> asyncpg.Record:
    """Assign a request the way the admin menu does (``RecoveryAction.REASSIGN``), through
    the state manager's transactions (its retry policy and step hook); returns the row."""
    recovery = WorkflowRecoveryManager(manager.pool, transactions=manager.transactions)
    outcome = await recovery.apply(
        RecoveryAction.REASSIGN,
        request_id,
        expected_version=version,
        admin=admin,
        assignee_id=assignee_id,
    )
    return outcome.request


class Faults:
    """A step hook: records the steps it sees; raises or kills the backend at a chosen step."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.seen: list[tuple[str, int]] = []
        self.action: Callable[[TransactionContext], Awaitable[None]] | None = None
        self.at_step: str | None = None
        self.only_attempt: int | None = 1
        self.fired = 0

    def arm(
        self,
        step: str,
        action: Callable[[TransactionContext], Awaitable[None]],
        *,
        only_attempt: int | None = 1,
    ) -> None:
        self.at_step, self.action, self.only_attempt, self.fired = step, action, only_attempt, 0

    def disarm(self) -> None:
        self.at_step = self.action = None

    async def __call__(self, ctx: TransactionContext, step: str) -> None:
        self.seen.append((step, ctx.attempt))
        if step != self.at_step or self.action is None:
            return
        if self.only_attempt is not None and ctx.attempt != self.only_attempt:
            return
        self.fired += 1
        await self.action(ctx)


async def raise_runtime_error(ctx: TransactionContext) -> None:
    raise RuntimeError("injected failure")


async def raise_serialization_failure(ctx: TransactionContext) -> None:
    """A real SQLSTATE 40001 from the server, on the transaction's connection."""
    await ctx.conn.execute(
        "DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = 'serialization_failure'; END $$"
    )


def terminate_backend(pool: asyncpg.Pool) -> Callable[[TransactionContext], Awaitable[None]]:
    """Kill the transaction's server process from another connection (and wait until it is
    gone): the transaction's next statement fails with a dropped connection."""

    async def action(ctx: TransactionContext) -> None:
        assert await pool.fetchval("SELECT pg_terminate_backend($1, 5000)", ctx.backend_pid)

    return action


def lose_commit_answer(pool: asyncpg.Pool) -> Callable[[TransactionContext], Awaitable[None]]:
    """At ``after_commit``: the COMMIT went through, then the connection dies before the
    caller could learn it."""

    async def action(ctx: TransactionContext) -> None:
        await pool.fetchval("SELECT pg_terminate_backend($1, 5000)", ctx.backend_pid)
        await ctx.conn.execute("SELECT 1")

    return action


@pytest.fixture
async def setup(pool: asyncpg.Pool) -> tuple[EnhancedStateManager, World, Faults]:
    faults = Faults(pool)
    manager = EnhancedStateManager(pool, retry_policy=FAST, step_hook=faults)
    return manager, await make_world(pool), faults


# --- the operations ---------------------------------------------------------------------


async def test_a_request_goes_through_its_workflow(pool: asyncpg.Pool, setup) -> None:
    manager, world, _ = setup
    material_id = await make_material(pool, "pipe", 5)
    request = await manager.create_request(
        world.client, workflow_type="repair", description="  leaking pipe ", address="Main 1"
    )
    assert (request["current_state"], request["owner_role"], request["version"]) == (
        "new",
        "controller",
        1,
    )
    request = await manager.advance(world.controller, request["id"], 1)
    request = await reassign(manager, world.admin, request["id"], 2, world.technician.user_id)
    assert (request["current_state"], request["assignee_id"], request["version"]) == (
        "in_work",
        world.technician.user_id,
        3,
    )
    use = await manager.use_materials(
        world.technician, request["id"], material_id, 2, idempotency_key="use:1"
    )
    assert (use.quantity, use.balance_after, use.duplicate) == (2, 3, False)
    for actor in (world.technician, world.warehouse, world.controller):
        request = await manager.advance(actor, request["id"], request["version"])
    assert (request["current_state"], request["status"], request["owner_role"]) == (
        "completed",
        "completed",
        None,
    )
    kinds = await pool.fetch(
        "SELECT kind, to_state FROM workflow_transitions WHERE request_id = $1 ORDER BY id",
        request["id"],
    )
    assert [(r["kind"], r["to_state"]) for r in kinds] == [
        ("create", "new"),
        ("normal", "in_work"),
        ("reassign", "in_work"),
        ("normal", "materials"),
        ("normal", "quality_check"),
        ("normal", "completed"),
    ]
    assert request["version"] == len(kinds)
    # outbox: every transition enqueued its notifications, keyed by the transition id
    keyed = await pool.fetchval(
        "SELECT count(DISTINCT split_part(idempotency_key, ':', 2)) FROM pending_notifications"
    )
    assert keyed == len(kinds)
    assert await pool.fetchval(
        "SELECT template_key FROM pending_notifications WHERE recipient_id = $1",
        world.technician.user_id,
    ) == "request.waiting_for_you"  # fmt: skip
    assert await ledger.balance(pool, material_id) == 3
    assert await pool.fetchval(
        "SELECT sum(quantity) FROM inventory_transactions WHERE material_id = $1", material_id
    ) == 3  # fmt: skip
    statuses = [(r["operation"], r["status"]) for r in await log_rows(pool)]
    assert statuses == [
        ("create_request", "committed"),
        ("advance", "committed"),
        ("recovery.reassign", "committed"),
        ("use_materials", "committed"),
        ("advance", "committed"),
        ("advance", "committed"),
        ("advance", "committed"),
    ]


async def test_refusals_are_typed_errors_and_change_nothing(pool: asyncpg.Pool, setup) -> None:
    manager, world, _ = setup
    material_id = await make_material(pool, "pipe", 1)
    request = await manager.create_request(world.client, workflow_type="repair", description="x")
    with pytest.raises(InputValidationError):
        await manager.create_request(world.client, workflow_type="teleport", description="x")
    with pytest.raises(PermissionDeniedError):
        await manager.advance(world.technician, request["id"], 1)
    with pytest.raises(ConcurrentModificationError):
        await manager.advance(world.controller, request["id"], 7)
    with pytest.raises(PermissionDeniedError):  # permission first: staff learn nothing
        await manager.advance(world.controller, 10_000, 1)
    with pytest.raises(NotFoundError):  # an admin may act on any request, so is told
        await manager.advance(world.admin, 10_000, 1)
    with pytest.raises(InvalidTransitionError):  # no materials in state "new"
        await manager.use_materials(world.controller, request["id"], material_id, 1,
                                    idempotency_key="k")  # fmt: skip
    with pytest.raises(InputValidationError):  # a manager does not own "new" of a repair
        await reassign(manager, world.admin, request["id"], 1, world.manager.user_id)
    request = await manager.advance(world.controller, request["id"], 1)
    with pytest.raises(InsufficientStockError) as info:
        await manager.use_materials(world.technician, request["id"], material_id, 2,
                                    idempotency_key="k2")  # fmt: skip
    assert (info.value.requested, info.value.available) == (2, 1)
    with pytest.raises(NotFoundError):
        await manager.use_materials(world.technician, request["id"], 9999, 1,
                                    idempotency_key="k3")  # fmt: skip
    with pytest.raises(InputValidationError):
        await manager.use_materials(world.technician, request["id"], material_id, 0,
                                    idempotency_key="k4")  # fmt: skip
    before = await snapshot(pool)
    assert await ledger.balance(pool, material_id) == 1
    with pytest.raises(ConcurrentModificationError):
        await manager.use_materials(world.technician, request["id"], material_id, 1,
                                    idempotency_key="k5", expected_version=1)  # fmt: skip
    assert await snapshot(pool) == before


async def test_a_repeated_material_use_is_counted_once(pool: asyncpg.Pool, setup) -> None:
    manager, world, _ = setup
    material_id = await make_material(pool, "pipe", 10)
    request = await repair_in_work(manager, world)
    first = await manager.use_materials(
        world.technician, request["id"], material_id, 3, idempotency_key="tg-update:42"
    )
    again = await manager.use_materials(
        world.technician, request["id"], material_id, 3, idempotency_key="tg-update:42"
    )
    assert (first.duplicate, again.duplicate) == (False, True)
    assert again.ledger_id == first.ledger_id and again.balance_after == 7
    assert await ledger.balance(pool, material_id) == 7
    with pytest.raises(InputValidationError):  # the same key for another use
        await manager.use_materials(
            world.technician, request["id"], material_id, 4, idempotency_key="tg-update:42"
        )
    assert await pool.fetchval("SELECT count(*) FROM inventory_transactions") == 2


# --- a failure at each step -------------------------------------------------------------


async def _prepare(op: str, manager: EnhancedStateManager, world: World, material_id: int):
    """Returns a coroutine factory running ``op`` once on a fresh target."""
    if op == "create_request":
        return lambda: manager.create_request(world.client, workflow_type="connection",
                                              description="fibre")  # fmt: skip
    request = await repair_in_work(manager, world)
    if op == "advance":
        return lambda: manager.advance(world.technician, request["id"], request["version"])
    if op == "recovery.reassign":
        return lambda: reassign(
            manager, world.admin, request["id"], request["version"], world.technician2.user_id
        )
    return lambda: manager.use_materials(
        world.technician, request["id"], material_id, 1, idempotency_key=f"use:{request['id']}"
    )


@pytest.mark.parametrize("op", list(STEPS))
async def test_a_failure_at_each_step_leaves_only_its_rollback_row(
    pool: asyncpg.Pool, setup, op: str
) -> None:
    manager, world, faults = setup
    material_id = await make_material(pool, "pipe", 100)
    run = await _prepare(op, manager, world, material_id)
    faults.seen.clear()
    await run()  # the steps of a successful run, in order
    assert [step for step, _ in faults.seen] == [*STEPS[op], AFTER_COMMIT]
    for step in STEPS[op]:
        run = await _prepare(op, manager, world, material_id)
        before, log_id = await snapshot(pool), await last_log_id(pool)
        faults.arm(step, raise_runtime_error)
        with pytest.raises(RuntimeError, match="injected"):
            await run()
        faults.disarm()
        assert faults.fired == 1
        assert await snapshot(pool) == before, f"partial state after a failure at {step}"
        rows = await log_rows(pool, log_id)
        assert [(r["operation"], r["status"]) for r in rows] == [(op, "rolled_back")], step
        assert rows[0]["error_message"].startswith(f"step {step}: RuntimeError")


@pytest.mark.parametrize("op", list(STEPS))
async def test_a_transient_failure_at_each_step_is_retried_and_applied_once(
    pool: asyncpg.Pool, setup, op: str
) -> None:
    manager, world, faults = setup
    material_id = await make_material(pool, "pipe", 100)
    for step in STEPS[op]:
        run = await _prepare(op, manager, world, material_id)
        before, log_id = await snapshot(pool), await last_log_id(pool)
        faults.arm(step, raise_serialization_failure)
        await run()
        faults.disarm()
        assert faults.fired == 1
        after = await snapshot(pool)
        new_rows = {t: len(after[t]) - len(before[t]) for t in TABLES}
        expected_new = {
            "create_request": {"service_requests": 1, "workflow_transitions": 1},
            "advance": {"workflow_transitions": 1},
            "recovery.reassign": {"workflow_transitions": 1},
            "use_materials": {"inventory_transactions": 1},
        }[op]
        for table in ("service_requests", "workflow_transitions", "inventory_transactions"):
            assert new_rows[table] == expected_new.get(table, 0), (step, table)
        rows = await log_rows(pool, log_id)
        assert [(r["status"], r["attempt"]) for r in rows] == [("retried", 1), ("committed", 2)]
        assert rows[0]["transaction_id"] == rows[1]["transaction_id"]
        assert rows[0]["error_category"] == "transient"


# --- a killed backend in the middle of a transition -----------------------------------


async def _outbox_transitions(pool: asyncpg.Pool) -> set[int]:
    keys = await pool.fetch("SELECT idempotency_key FROM pending_notifications")
    return {int(r["idempotency_key"].split(":")[1]) for r in keys}


async def test_terminated_backend_mid_transition_is_retried_and_applied_once(
    pool: asyncpg.Pool, setup
) -> None:
    manager, world, faults = setup
    request = await manager.create_request(world.client, workflow_type="repair", description="x")
    log_id = await last_log_id(pool)
    # after the UPDATE of the request, before its history row: the worst moment
    faults.arm("history", terminate_backend(pool))
    updated = await manager.advance(world.controller, request["id"], request["version"])
    assert faults.fired == 1
    assert (updated["current_state"], updated["version"]) == ("in_work", 2)
    history = await pool.fetch(
        "SELECT id, to_state FROM workflow_transitions WHERE request_id = $1 ORDER BY id",
        request["id"],
    )
    assert [r["to_state"] for r in history] == ["new", "in_work"]
    assert await _outbox_transitions(pool) == {r["id"] for r in history}
    rows = await log_rows(pool, log_id)
    assert [(r["status"], r["attempt"], r["error_category"]) for r in rows] == [
        ("retried", 1, "transient"),
        ("committed", 2, None),
    ]


async def test_terminated_backend_on_every_attempt_fails_cleanly(pool: asyncpg.Pool, setup) -> None:
    manager, world, faults = setup
    request = await manager.create_request(world.client, workflow_type="repair", description="x")
    before, log_id = await snapshot(pool), await last_log_id(pool)
    faults.arm("apply_state", terminate_backend(pool), only_attempt=None)
    with pytest.raises((asyncpg.InterfaceError, asyncpg.PostgresConnectionError, OSError)):
        await manager.advance(world.controller, request["id"], request["version"])
    assert faults.fired == FAST.max_attempts
    assert await snapshot(pool) == before
    rows = await log_rows(pool, log_id)
    assert [(r["status"], r["attempt"]) for r in rows] == [
        ("retried", 1),
        ("retried", 2),
        ("rolled_back", 3),
    ]
    # the pool recovered: the next operation works
    faults.disarm()
    assert (await manager.advance(world.controller, request["id"], 1))["version"] == 2


@pytest.mark.parametrize("op", ["create_request", "advance", "use_materials"])
async def test_a_lost_commit_answer_is_never_applied_twice(
    pool: asyncpg.Pool, setup, op: str
) -> None:
    manager, world, faults = setup
    material_id = await make_material(pool, "pipe", 10)
    run = await _prepare(op, manager, world, material_id)
    before = await snapshot(pool)
    faults.arm(AFTER_COMMIT, lose_commit_answer(pool))
    result = await run()
    assert faults.fired == 1
    after = await snapshot(pool)
    if op == "create_request":
        assert len(after["service_requests"]) == len(before["service_requests"]) + 1
        assert result["id"] == after["service_requests"][-1][0]
    elif op == "advance":
        assert len(after["workflow_transitions"]) == len(before["workflow_transitions"]) + 1
        assert result["current_state"] == "materials"
    else:
        assert len(after["inventory_transactions"]) == len(before["inventory_transactions"]) + 1
        assert (result.balance_after, result.duplicate) == (9, False)
        assert await ledger.balance(pool, material_id) == 9
    statuses = sorted(r["status"] for r in await log_rows(pool) if r["operation"] == op)
    assert statuses.count("committed") == (2 if op == "advance" else 1) and "failed" in statuses


async def test_a_replayed_use_with_a_lost_commit_answer_resumes_as_the_duplicate(
    pool: asyncpg.Pool, setup
) -> None:
    manager, world, faults = setup
    material_id = await make_material(pool, "pipe", 5)
    request = await repair_in_work(manager, world)
    first = await manager.use_materials(world.technician, request["id"], material_id, 2,
                                        idempotency_key="tg:7")  # fmt: skip
    faults.arm(AFTER_COMMIT, lose_commit_answer(pool))
    again = await manager.use_materials(world.technician, request["id"], material_id, 2,
                                        idempotency_key="tg:7")  # fmt: skip
    assert faults.fired == 1
    assert (again.ledger_id, again.duplicate, again.balance_after) == (first.ledger_id, True, 3)
    assert await ledger.balance(pool, material_id) == 3


# --- nesting in an outer transaction ----------------------------------------------------


async def test_operations_nest_in_an_outer_transaction_as_savepoints(
    pool: asyncpg.Pool, setup
) -> None:
    manager, world, _ = setup
    material_id = await make_material(pool, "pipe", 1)
    request = await repair_in_work(manager, world)
    log_id = await last_log_id(pool)
    async with manager.transactions.transaction("finish_work") as outer:
        await manager.use_materials(world.technician, request["id"], material_id, 1,
                                    idempotency_key="a", within=outer)  # fmt: skip
        with pytest.raises(InsufficientStockError):
            await manager.use_materials(world.technician, request["id"], material_id, 1,
                                        idempotency_key="b", within=outer)  # fmt: skip
        await manager.advance(world.technician, request["id"], request["version"], within=outer)
    keys = [r["idempotency_key"] for r in await pool.fetch("SELECT * FROM inventory_transactions")]
    assert sorted(keys) == ["a", "receipt:pipe"]
    assert await ledger.balance(pool, material_id) == 0
    rows = await log_rows(pool, log_id)
    assert [(r["operation"], r["status"]) for r in rows] == [("finish_work", "committed")]
    assert ("use_materials", "rolled_back") in [(s["step"], s["status"]) for s in rows[0]["steps"]]


# --- concurrency --------------------------------------------------------------------------


async def test_two_actors_advancing_the_same_request_at_once(pool: asyncpg.Pool, setup) -> None:
    manager, world, faults = setup
    request = await manager.create_request(
        world.client, workflow_type="connection", description="fibre"
    )
    both_open = asyncio.Barrier(2)

    async def meet(ctx: TransactionContext) -> None:
        await both_open.wait()  # both transactions are open before either locks the row

    faults.arm("lock", meet)
    results = await asyncio.gather(
        manager.advance(world.manager, request["id"], request["version"]),
        manager.advance(world.manager2, request["id"], request["version"]),
        return_exceptions=True,
    )
    assert faults.fired == 2
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1 and winners[0]["version"] == 2
    # the winner moved it on to the junior managers: the loser may no longer act on it, and
    # is refused as anyone else would be (permission comes before the version check)
    assert len(losers) == 1 and isinstance(losers[0], PermissionDeniedError)
    history = await pool.fetch(
        "SELECT kind FROM workflow_transitions WHERE request_id = $1", request["id"]
    )
    assert sorted(r["kind"] for r in history) == ["create", "normal"]


async def test_50_concurrent_uses_of_a_material_with_stock_for_20(
    pool: asyncpg.Pool, database_url: str, setup
) -> None:
    _, world, _ = setup
    material_id = await make_material(pool, "connector", 20)
    technicians = []
    for index in range(50):
        row = await users.upsert_from_telegram(
            pool, telegram_id=5000 + index, full_name=f"tech {index}", username=None,
            language="en", role="technician",
        )  # fmt: skip
        technicians.append(Actor(row["id"], "technician"))
    # a pool wide enough for the uses to overlap in the database (20 sessions at once)
    wide = await create_pool(database_url, min_size=20, max_size=20)
    try:
        manager = EnhancedStateManager(wide, retry_policy=FAST)
        request = await repair_in_work(manager, world)
        start = asyncio.Event()

        async def use(actor: Actor, index: int):
            await start.wait()
            return await manager.use_materials(
                actor, request["id"], material_id, 1, idempotency_key=f"use:{index}"
            )

        tasks = [asyncio.create_task(use(actor, i)) for i, actor in enumerate(technicians)]
        start.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await wide.close()
    succeeded = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(succeeded) == 20
    assert len(refused) == 30 and all(isinstance(r, InsufficientStockError) for r in refused)
    assert sorted(r.balance_after for r in succeeded) == list(range(20))
    assert await ledger.balance(pool, material_id) == 0
    assert await pool.fetchval(
        "SELECT sum(quantity) FROM inventory_transactions WHERE material_id = $1", material_id
    ) == 0  # fmt: skip
    assert await pool.fetchval(
        "SELECT count(*) FROM inventory_transactions WHERE kind = 'issue'"
    ) == 20  # fmt: skip
