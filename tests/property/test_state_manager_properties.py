"""Property-based tests (hypothesis) of EnhancedStateManager on a real PostgreSQL.

Random sequences of operations (open, advance, assign, use materials, replay of an earlier
material use) run with injected failures (an assignment is the admin's reassign,
``WorkflowRecoveryManager.apply(RecoveryAction.REASSIGN)``, the path of the admin menu, on
the state manager's transactions): a Python error, a real SQLSTATE 40001 once or on
every attempt, the server process killed (``pg_terminate_backend``) mid-transaction, or the
COMMIT answer lost. After each sequence the database must equal a simple model of the
committed operations and these invariants must hold:

- a request's state, role and assignee equal its last ``workflow_transitions`` row, and its
  version equals its number of transitions;
- each material's balance equals the sum of its ledger and is never negative;
- outbox rows exist exactly for committed transitions (keys ``transition:<id>:...``);
- ``transaction_log`` has one ``committed`` row per successful operation and one
  ``rolled_back`` row per failed one.

Bounded for CI: 30 examples of at most 12 operations each.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from database import users
from recovery import workflow_definitions as wf
from recovery.actors import Actor
from recovery.exceptions import (
    ConcurrentModificationError,
    DomainError,
    InputValidationError,
    InsufficientStockError,
    InvalidTransitionError,
    PermissionDeniedError,
)
from recovery.state_manager import EnhancedStateManager
from recovery.transaction_context import AFTER_COMMIT
from recovery.transactions import TransactionContext, TransactionRetryPolicy
from recovery.workflows import RecoveryAction, WorkflowRecoveryManager
from tests.factories import receive
from tests.state_steps import STEPS as STATE_STEPS

POLICY = TransactionRetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.005)
STEPS = {
    kind: STATE_STEPS[operation]
    for kind, operation in (
        ("create", "create_request"), ("advance", "advance"),
        ("assign", "recovery.reassign"), ("use", "use_materials"),
    )
}  # fmt: skip
USERS = [
    ("client", "client"),
    ("manager", "manager"),
    ("junior_manager", "junior_manager"),
    ("controller", "controller"),
    ("technician", "technician"),
    ("technician2", "technician"),
    ("warehouse", "warehouse"),
    ("admin", "admin"),
]
# Empty the tables between examples (DELETE: cheaper than TRUNCATE on tiny tables).
RESET_SQL = """
DELETE FROM transaction_log;
DELETE FROM pending_notifications;
DELETE FROM inventory_transactions;
DELETE FROM workflow_recovery_log;
DELETE FROM workflow_transitions;
DELETE FROM service_requests;
DELETE FROM materials;
DELETE FROM users;
"""


class Injected(Exception):
    """The injected non-transient failure."""


# --- the model --------------------------------------------------------------------------


@dataclass
class ModelRequest:
    workflow: str
    state_index: int = 0
    assignee: int | None = None
    version: int = 1

    @property
    def step(self) -> wf.Step:
        return wf.WORKFLOWS[self.workflow][self.state_index]

    @property
    def active(self) -> bool:
        return self.step.state != wf.TERMINAL_STATE


@dataclass
class Model:
    users: dict[str, Actor]
    balances: dict[int, int]
    requests: dict[int, ModelRequest] = field(default_factory=dict)
    used_keys: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    uses: list[tuple[str, int, int, int, str]] = field(default_factory=list)

    def owner(self, role: str | None) -> Actor:
        """The (first) user of ``role``; the admin when no role owns the state."""
        return self.users[role] if role else self.users["admin"]


# --- operations as data -----------------------------------------------------------------


@dataclass(frozen=True)
class Op:
    kind: str  # create, advance, assign (the admin's reassign), use, replay
    workflow: str = "repair"
    target: int = 0  # index into the existing requests
    actor: str = "owner"  # owner, admin, wrong (the client)
    stale: bool = False
    second_assignee: bool = False
    material: int = 0
    quantity: int = 1


@dataclass(frozen=True)
class Fault:
    kind: str  # permanent, transient, kill, lost_commit, exhausted
    step: int


targets = st.sampled_from([0, 0, 1, 1, 2, 3])  # mostly the two seeded repairs in work
creates = st.builds(Op, kind=st.just("create"), workflow=st.sampled_from(sorted(wf.WORKFLOWS)))
advances = st.builds(
    Op,
    kind=st.just("advance"),
    target=targets,
    actor=st.sampled_from(["owner"] * 4 + ["admin", "wrong"]),
    stale=st.sampled_from([False] * 5 + [True]),
)
assigns = st.builds(
    Op,
    kind=st.just("assign"),
    target=targets,
    actor=st.just("admin"),  # the admin menu is the only way to assign
    stale=st.sampled_from([False] * 5 + [True]),
    second_assignee=st.booleans(),
)
material_uses = st.builds(
    Op,
    kind=st.just("use"),
    target=targets,
    actor=st.sampled_from(["owner"] * 4 + ["wrong"]),
    material=st.integers(0, 1),
    quantity=st.integers(1, 3),
)
replays = st.builds(Op, kind=st.just("replay"), target=targets)
ops = st.one_of(creates, advances, advances, assigns, material_uses, material_uses, replays)
faults = st.none() | st.builds(
    Fault,
    kind=st.sampled_from(["permanent", "transient", "kill", "lost_commit", "exhausted"]),
    step=st.integers(0, 4),
)
sequences = st.lists(st.tuples(ops, faults), min_size=3, max_size=12)
stocks = st.tuples(st.integers(0, 8), st.integers(0, 8))


# --- the fault hook ---------------------------------------------------------------------


class FaultHook:
    """Fires ``action`` at ``step`` (on the first attempt, or on every attempt)."""

    def __init__(self) -> None:
        self.step: str | None = None
        self.action: Callable[[TransactionContext], Awaitable[None]] | None = None
        self.every_attempt = False
        self.fired = 0

    async def __call__(self, ctx: TransactionContext, step: str) -> None:
        if step != self.step or self.action is None:
            return
        if ctx.attempt != 1 and not self.every_attempt:
            return
        self.fired += 1
        await self.action(ctx)


def fault_action(pool: asyncpg.Pool, kind: str) -> Callable[[TransactionContext], Awaitable[None]]:
    async def permanent(ctx: TransactionContext) -> None:
        raise Injected("injected")

    async def serialization_failure(ctx: TransactionContext) -> None:
        await ctx.conn.execute(
            "DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = 'serialization_failure'; END $$"
        )

    async def kill(ctx: TransactionContext) -> None:
        await pool.fetchval("SELECT pg_terminate_backend($1, 5000)", ctx.backend_pid)
        if kind == "lost_commit":
            await ctx.conn.execute("SELECT 1")

    return {
        "permanent": permanent,
        "transient": serialization_failure,
        "exhausted": serialization_failure,
        "kill": kill,
        "lost_commit": kill,
    }[kind]


# --- expected outcome of one operation on the model -------------------------------------


def expect(model: Model, op: Op, request_id: int | None, use: tuple | None) -> type | None:
    """The exception type the operation must raise with no fault, or None for success."""
    if op.kind == "create":
        return None
    assert request_id is not None
    request = model.requests[request_id]
    actor = _actor(model, op, request)
    if op.kind in ("advance", "assign"):
        # permission first (recovery.state_manager.may_act; an admin, who assigns, may act
        # on any request), then version, then status
        if not _may_act(actor, request):
            return PermissionDeniedError
        if op.stale:
            return ConcurrentModificationError
        if not request.active:
            return InvalidTransitionError
        if op.kind == "advance":
            return None
        assignee = _assignee(model, op, request)
        if assignee.role != request.step.role:
            return InputValidationError
        if request.assignee == assignee.user_id:
            return InvalidTransitionError
        return None
    assert use is not None
    key, material_id, _, quantity, actor_name = use
    actor = model.users[actor_name] if actor_name != "owner" else model.owner(request.step.role)
    if not _may_act(actor, request):
        return PermissionDeniedError
    if not request.active or request.step.state not in wf.MATERIAL_STATES:
        return InvalidTransitionError
    if key in model.used_keys:
        return None  # a duplicate: succeeds without taking anything
    if model.balances[material_id] < quantity:
        return InsufficientStockError
    return None


def _may_act(actor: Actor, request: ModelRequest) -> bool:
    """The model of ``recovery.state_manager.may_act``: an admin on any request; staff on an
    active request of their role held by nobody or by them."""
    if actor.role == "admin":
        return True
    return (
        request.active
        and actor.role == request.step.role
        and request.assignee in (None, actor.user_id)
    )


def _actor(model: Model, op: Op, request: ModelRequest) -> Actor:
    if op.actor == "wrong":
        return model.users["client"]
    if op.actor == "admin":
        return model.users["admin"]
    return model.owner(request.step.role)


def _assignee(model: Model, op: Op, request: ModelRequest) -> Actor:
    role = request.step.role
    if role == "technician":
        return model.users["technician2" if op.second_assignee else "technician"]
    if op.second_assignee or role is None:
        return model.users["client"]
    return model.users[role]


def apply(model: Model, op: Op, request_id: int | None, result: Any, use: tuple | None) -> None:
    """Apply a successful operation to the model."""
    if op.kind == "create":
        model.requests[result["id"]] = ModelRequest(workflow=op.workflow)
        return
    assert request_id is not None
    request = model.requests[request_id]
    if op.kind == "advance":
        request.state_index += 1
        request.assignee = None
        request.version += 1
    elif op.kind == "assign":
        request.assignee = _assignee(model, op, request).user_id
        request.version += 1
    else:
        assert use is not None
        key, material_id, _, quantity, _ = use
        if key in model.used_keys:
            assert result.duplicate
        else:
            assert not result.duplicate
            model.used_keys[key] = (material_id, request_id, quantity)
            model.balances[material_id] -= quantity


# --- the property -------------------------------------------------------------------------


async def _seed(pool: asyncpg.Pool, stock: tuple[int, int]) -> Model:
    await pool.execute(RESET_SQL)
    actors = {}
    for index, (name, role) in enumerate(USERS):
        row = await users.upsert_from_telegram(
            pool, telegram_id=1 + index, full_name=name, username=None, language="en", role=role
        )
        actors[name] = Actor.of(row)
    balances = {}
    async with pool.acquire() as conn, conn.transaction():
        for index, quantity in enumerate(stock):
            material_id = await conn.fetchval(
                "INSERT INTO materials (sku, name) VALUES ($1, $1) RETURNING id", f"m{index}"
            )
            if quantity:
                await receive(
                    conn, material_id=material_id, quantity=quantity, idempotency_key=f"r{index}"
                )
            balances[material_id] = quantity
    return Model(users=actors, balances=balances)


async def _call(
    manager: EnhancedStateManager, model: Model, op: Op, request_id: int | None, use: tuple | None
) -> Any:
    if op.kind == "create":
        return await manager.create_request(
            model.users["client"], workflow_type=op.workflow, description="property"
        )
    assert request_id is not None
    request = model.requests[request_id]
    version = request.version - 1 if op.stale else request.version
    actor = _actor(model, op, request)
    if op.kind == "advance":
        return await manager.advance(actor, request_id, version)
    if op.kind == "assign":
        recovery = WorkflowRecoveryManager(manager.pool, transactions=manager.transactions)
        outcome = await recovery.apply(
            RecoveryAction.REASSIGN,
            request_id,
            expected_version=version,
            admin=actor,
            assignee_id=_assignee(model, op, request).user_id,
        )
        return outcome.request
    assert use is not None
    key, material_id, _, quantity, actor_name = use
    use_actor = model.users[actor_name] if actor_name != "owner" else model.owner(request.step.role)
    return await manager.use_materials(
        use_actor, request_id, material_id, quantity, idempotency_key=key
    )


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(stock=stocks, sequence=sequences)
# found by this test: a replayed use whose COMMIT answer is lost must resume as a duplicate
@example(stock=(1, 0), sequence=[(Op("use"), None), (Op("replay"), Fault("lost_commit", 0))])
async def test_random_operations_with_injected_failures_keep_the_invariants(
    pool: asyncpg.Pool, stock: tuple[int, int], sequence: list[tuple[Op, Fault | None]]
) -> None:
    model = await _seed(pool, stock)
    hook = FaultHook()
    manager = EnhancedStateManager(pool, retry_policy=POLICY, step_hook=hook)
    materials = sorted(model.balances)
    # start with two repairs in "in_work" (materials may be used) and a new connection
    seed = [Op("create", "repair"), Op("advance"), Op("create", "repair"), Op("advance")]
    for op in [*seed, Op("create", "connection")]:
        request_id = max(model.requests) if op.kind == "advance" else None
        apply(model, op, request_id, await _call(manager, model, op, request_id, None), None)
    successes, failures = 5, 0
    for number, (op, fault) in enumerate(sequence):
        ids = sorted(model.requests)
        if op.kind != "create" and not ids:
            continue
        request_id = ids[op.target % len(ids)] if op.kind != "create" else None
        use: tuple | None = None
        if op.kind == "use":
            actor_name = "owner" if op.actor == "owner" else "client"
            use = (f"use:{number}", materials[op.material], request_id, op.quantity, actor_name)
            model.uses.append(use)
        elif op.kind == "replay":  # the same material use again (a retried update)
            if not model.uses:
                continue
            use = model.uses[op.target % len(model.uses)]
            request_id = use[2]
            op = Op(kind="use")
        expected = expect(model, op, request_id, use)
        kind = op.kind
        hook.fired, hook.every_attempt, hook.action, hook.step = 0, False, None, None
        if fault is not None:
            hook.step = (
                AFTER_COMMIT
                if fault.kind == "lost_commit"
                else STEPS[kind][fault.step % len(STEPS[kind])]
            )
            hook.action = fault_action(pool, fault.kind)
            hook.every_attempt = fault.kind == "exhausted"
        try:
            result = await _call(manager, model, op, request_id, use)
        except (DomainError, Injected, asyncpg.SerializationError) as exc:
            failures += 1
            event(f"{op.kind} failed: {type(exc).__name__}")
            injected = isinstance(exc, Injected | asyncpg.SerializationError)
            if injected:
                assert fault is not None and fault.kind in ("permanent", "exhausted"), exc
                assert hook.fired >= 1
            else:
                assert type(exc) is expected, (op, fault, exc)
            continue
        successes += 1
        event(f"{op.kind} succeeded" + (f" despite {fault.kind}" if hook.fired else ""))
        assert expected is None, (op, fault, "succeeded, expected", expected)
        if fault is not None and fault.kind in ("permanent", "exhausted"):
            assert hook.fired == 0, (op, fault, "an injected failure was swallowed")
        apply(model, op, request_id, result, use)
    await _check_invariants(pool, model, successes, failures)


async def _check_invariants(pool: asyncpg.Pool, model: Model, successes: int, failures: int):
    requests = await pool.fetch("SELECT * FROM service_requests ORDER BY id")
    assert {r["id"] for r in requests} == set(model.requests)
    for row in requests:
        history = await pool.fetch(
            "SELECT * FROM workflow_transitions WHERE request_id = $1 ORDER BY id", row["id"]
        )
        last = history[-1]
        assert (row["current_state"], row["owner_role"], row["assignee_id"]) == (
            last["to_state"],
            last["to_role"],
            last["to_assignee_id"],
        )
        assert row["version"] == len(history)
        expected = model.requests[row["id"]]
        assert (row["current_state"], row["assignee_id"], row["version"]) == (
            expected.step.state,
            expected.assignee,
            expected.version,
        )
        assert row["status"] == ("active" if expected.active else "completed")
    balances = await pool.fetch(
        "SELECT m.id, m.balance, coalesce(sum(t.quantity), 0) AS ledger FROM materials m "
        "LEFT JOIN inventory_transactions t ON t.material_id = m.id GROUP BY m.id"
    )
    for row in balances:
        assert row["balance"] == row["ledger"] == model.balances[row["id"]] >= 0
    transitions = {r["id"] for r in await pool.fetch("SELECT id FROM workflow_transitions")}
    keys = await pool.fetch("SELECT idempotency_key FROM pending_notifications")
    assert {int(r["idempotency_key"].split(":")[1]) for r in keys} == transitions
    counts = dict(await pool.fetch("SELECT status, count(*) FROM transaction_log GROUP BY status"))
    assert counts.get("committed", 0) == successes
    assert counts.get("rolled_back", 0) == failures
