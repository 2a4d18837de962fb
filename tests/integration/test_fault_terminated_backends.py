"""THE LONG ONE (60 s, marker ``fault``): staff operations, admin recovery actions and
batches run concurrently while a side task terminates backends of the test database
(``pg_terminate_backend``) every 50 ms: one at random, and about once a second all of them.
The application reaches PostgreSQL through a TCP proxy that also cuts 2 % of the
connections right after forwarding a COMMIT (``commit_cut_proxy``): a terminated backend
always answers a COMMIT it completed, so only the network can lose that answer, and the
in-doubt resolution has to find those commits. Then the tables are checked:

- 0 invariant violations: request version = number of its ``workflow_transitions`` rows;
  successful ``workflow_recovery_log`` rows = transitions of kind force/reset/complete/
  reassign (per request and kind); each transition but an opening or an assignment has its
  client notification in the outbox and no outbox row points at a missing transition;
  material balance = ledger sum;
  ``committed`` ``transaction_log`` rows = the effects of each operation (exactly once);
- every operation reported refused, failed or in doubt is looked up in the tables: none of
  them committed (its ``transaction_log`` rows, its idempotency key, its unique reason or
  description); every operation reported done committed exactly once;
- every batch returns its result, and succeeded + stale + failed = requested, each request
  changed by the batch exactly when it is listed succeeded.

``FAULT_TEST_SECONDS`` shortens the load phase for local iteration only (default 60).
The transaction ids of each call are collected by a step hook that only observes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

from database.pool import create_pool
from recovery import workflow_definitions as wf
from recovery.actors import Actor
from recovery.exceptions import DomainError, TransactionInDoubtError
from recovery.state_manager import EnhancedStateManager
from recovery.transactions import TransactionContext
from recovery.workflows import BatchResult, RecoveryAction, WorkflowRecoveryManager
from tests.factories import make_material, make_user
from tests.integration.commit_cut_proxy import CommitCutProxy

pytestmark = pytest.mark.fault

LOAD_S = float(os.environ.get("FAULT_TEST_SECONDS", "60"))
KILL_EVERY_S = 0.05
BURST_EVERY = 20  # every 20th tick (about once a second) terminates every backend at once
COMMIT_CUT_PROBABILITY = 0.02  # share of COMMITs whose answer the network loses
STAFF_WORKERS = 4
ADMIN_WORKERS = 2
BATCH_SIZE = 20
INITIAL_REQUESTS = 150
RECOVERY_KINDS = {
    RecoveryAction.FORCE.value: "force",
    RecoveryAction.RESET.value: "reset",
    RecoveryAction.COMPLETE.value: "complete",
    RecoveryAction.REASSIGN.value: "reassign",
}

_transactions_of_call: ContextVar[set[uuid.UUID] | None] = ContextVar("fault_call", default=None)


async def _observe(ctx: TransactionContext, _step: str) -> None:
    """Step hook: note the transaction id of the running call (all its attempts share it)."""
    ids = _transactions_of_call.get()
    if ids is not None:
        ids.add(ctx.transaction_id)


@dataclass
class Call:
    """One operation as its caller saw it: ``outcome`` done, refused, failed or in_doubt;
    ``marker``: what identifies its effect in the tables (key, reason, description)."""

    kind: str
    outcome: str
    marker: str | None
    request_id: int | None
    transaction_ids: set[uuid.UUID]
    error: str = ""


@dataclass
class Batch:
    """One batch: its targets, its unique reason, and its result (None: it raised)."""

    reason: str
    targets: list[tuple[int, int]]
    result: BatchResult | None
    error: str = ""


@dataclass
class Tally:
    calls: list[Call] = field(default_factory=list)
    batches: list[Batch] = field(default_factory=list)
    terminated: int = 0
    markers: itertools.count[int] = field(default_factory=itertools.count)

    def marker(self, prefix: str) -> str:
        return f"fault:{prefix}:{next(self.markers)}"


@dataclass(frozen=True)
class World:
    client: Actor
    staff: dict[str, list[Actor]]
    admin: Actor
    materials: list[int]


async def _call(
    tally: Tally,
    kind: str,
    marker: str | None,
    request_id: int | None,
    operation: Callable[[], Awaitable[Any]],
) -> Any:
    ids: set[uuid.UUID] = set()
    token = _transactions_of_call.set(ids)
    result, error = None, ""
    try:
        result = await operation()
        outcome = "done"
    except DomainError as exc:
        outcome, error = "refused", type(exc).__name__
    except TransactionInDoubtError as exc:
        outcome, error = "in_doubt", type(exc).__name__
    except Exception as exc:
        outcome, error = "failed", type(exc).__name__
    finally:
        _transactions_of_call.reset(token)
    tally.calls.append(Call(kind, outcome, marker, request_id, ids, error))
    return result


async def _active(pool: asyncpg.Pool, limit: int, role: str | None = None) -> list[asyncpg.Record]:
    """Random active requests (a read under the killer may fail: then none this time)."""
    try:
        return await pool.fetch(
            "SELECT id, version, current_state, owner_role, assignee_id FROM service_requests "
            "WHERE status = 'active' AND ($2::text IS NULL OR owner_role = $2) "
            "ORDER BY random() LIMIT $1",
            limit,
            role,
        )
    except Exception:
        await asyncio.sleep(0.01)
        return []


async def _staff_worker(
    pool: asyncpg.Pool,
    manager: EnhancedStateManager,
    world: World,
    tally: Tally,
    stop: asyncio.Event,
) -> None:
    while not stop.is_set():
        if random.random() < 0.1:
            description = tally.marker("create")
            await _call(
                tally,
                "create_request",
                description,
                None,
                lambda d=description: manager.create_request(
                    world.client, workflow_type="repair", description=d
                ),
            )
            continue
        rows = await _active(pool, 1)
        if not rows:
            continue
        row = rows[0]
        actor = random.choice(world.staff[row["owner_role"]])
        if row["current_state"] in wf.MATERIAL_STATES and random.random() < 0.5:
            key = tally.marker("use")
            material = random.choice(world.materials)
            await _call(
                tally,
                "use_materials",
                key,
                row["id"],
                lambda a=actor, r=row["id"], m=material, k=key: manager.use_materials(
                    a, r, m, 1, idempotency_key=k
                ),
            )
        else:
            await _call(
                tally,
                "advance",
                None,
                row["id"],
                lambda a=actor, r=row: manager.advance(a, r["id"], r["version"]),
            )


def _assignee_for(world: World, row: asyncpg.Record) -> int | None:
    others = [a.user_id for a in world.staff[row["owner_role"]] if a.user_id != row["assignee_id"]]
    return random.choice(others) if others else None


async def _admin_worker(
    pool: asyncpg.Pool,
    manager: WorkflowRecoveryManager,
    world: World,
    tally: Tally,
    stop: asyncio.Event,
) -> None:
    while not stop.is_set():
        rows = await _active(pool, 1)
        if not rows:
            continue
        row = rows[0]
        action = random.choice(list(RecoveryAction))
        reason = tally.marker("admin")
        await _call(
            tally,
            action.value,
            reason,
            row["id"],
            lambda a=action, r=row, why=reason: manager.apply(
                a,
                r["id"],
                expected_version=r["version"],
                admin=world.admin,
                reason=why,
                assignee_id=_assignee_for(world, r) if a is RecoveryAction.REASSIGN else None,
            ),
        )
        await asyncio.sleep(0.01)


async def _batch_worker(
    pool: asyncpg.Pool,
    manager: WorkflowRecoveryManager,
    world: World,
    tally: Tally,
    stop: asyncio.Event,
) -> None:
    while not stop.is_set():
        action = random.choice(list(RecoveryAction))
        role = "technician" if action is RecoveryAction.REASSIGN else None
        rows = await _active(pool, BATCH_SIZE, role)
        if not rows:
            continue
        assignee = random.choice(world.staff["technician"]).user_id
        reason = tally.marker("batch")
        targets = [(r["id"], r["version"]) for r in rows]
        try:
            result = await manager.apply_batch(
                action,
                targets,
                admin=world.admin,
                reason=reason,
                assignee_id=assignee if role else None,
            )
        except Exception as exc:
            tally.batches.append(Batch(reason, targets, None, type(exc).__name__))
        else:
            tally.batches.append(Batch(reason, targets, result))
        await asyncio.sleep(0.2)


async def _killer(dsn: str, tally: Tally, stop: asyncio.Event) -> None:
    """Every 50 ms: terminate one other client backend of the test database, chosen at
    random; every ``BURST_EVERY``-th time all of them (a reconnect storm of the pool)."""
    conn = await asyncpg.connect(dsn, server_settings={"application_name": "fault-killer"})
    try:
        for tick in itertools.count(1):
            if stop.is_set():
                break
            tally.terminated += await conn.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM ("
                " SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
                " ORDER BY random() LIMIT $1) AS victims",
                None if tick % BURST_EVERY == 0 else 1,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), KILL_EVERY_S)
    finally:
        await conn.close()


async def _make_world(pool: asyncpg.Pool) -> World:
    client = await make_user(pool, role="client")
    staff = {
        role: [
            Actor((await make_user(pool, role=role))["id"], role)
            for _ in range(2)  # two per role, so that a reassignment has someone to go to
        ]
        for role in ("controller", "technician", "warehouse")
    }
    admin = await make_user(pool, role="admin")
    materials = [
        (await make_material(pool, sku=f"M{i}", balance=1_000_000))["id"] for i in range(3)
    ]
    return World(
        client=Actor(client["id"], "client"),
        staff=staff,
        admin=Actor.of(admin),
        materials=materials,
    )


# --- the checks -----------------------------------------------------------------------------

INVARIANTS = {
    "version != number of transitions": """
        SELECT r.id FROM service_requests r
          LEFT JOIN (SELECT request_id, count(*) AS n FROM workflow_transitions GROUP BY 1) t
                 ON t.request_id = r.id
         WHERE r.version <> COALESCE(t.n, 0)""",
    "recovery log success rows != recovery transitions": """
        WITH t AS (SELECT request_id, kind, count(*) AS n FROM workflow_transitions
                    WHERE kind IN ('force', 'reset', 'complete', 'reassign') GROUP BY 1, 2),
             l AS (SELECT request_id,
                          CASE action WHEN 'force_transition' THEN 'force'
                                      WHEN 'reset_state' THEN 'reset' ELSE action END AS kind,
                          count(*) AS n
                     FROM workflow_recovery_log WHERE success GROUP BY 1, 2)
        SELECT request_id, kind FROM t FULL JOIN l USING (request_id, kind)
         WHERE t.n IS DISTINCT FROM l.n""",
    # (an assignment and the opening of a request tell the client nothing: the client has
    # just been answered in the chat; recovery.workflow_events)
    "transition without its client notification": """
        SELECT t.id FROM workflow_transitions t
         WHERE t.kind NOT IN ('assign', 'create')
           AND NOT EXISTS (SELECT 1 FROM pending_notifications p
                            WHERE p.idempotency_key = 'transition:' || t.id || ':client')""",
    "notification of a transition that does not exist": """
        SELECT p.id FROM pending_notifications p
         WHERE p.idempotency_key LIKE 'transition:%'
           AND NOT EXISTS (SELECT 1 FROM workflow_transitions t
                            WHERE p.idempotency_key LIKE 'transition:' || t.id || ':%')""",
    "balance != ledger sum": """
        SELECT m.id FROM materials m
          LEFT JOIN (SELECT material_id, sum(quantity) AS total FROM inventory_transactions
                      GROUP BY 1) l ON l.material_id = m.id
         WHERE m.balance <> COALESCE(l.total, 0)""",
    "committed transaction_log rows != effects": """
        WITH committed AS (SELECT operation, count(*) AS n FROM transaction_log
                            WHERE status = 'committed' GROUP BY 1),
             effects AS (
                SELECT 'create_request' AS operation, count(*) AS n FROM workflow_transitions
                 WHERE kind = 'create'
                UNION ALL SELECT 'advance', count(*) FROM workflow_transitions
                 WHERE kind = 'normal'
                UNION ALL SELECT 'use_materials', count(*) FROM inventory_transactions
                 WHERE kind = 'issue'
                UNION ALL SELECT 'recovery.' || action, count(*) FROM workflow_recovery_log
                 WHERE success GROUP BY action)
        SELECT operation FROM effects FULL JOIN committed USING (operation)
         WHERE COALESCE(effects.n, 0) <> COALESCE(committed.n, 0)""",
}


async def _violations(conn: asyncpg.Connection) -> dict[str, list[Any]]:
    found = {}
    for name, sql in INVARIANTS.items():
        rows = await conn.fetch(sql)
        if rows:
            found[name] = [tuple(r) for r in rows[:10]]
    return found


async def _effects_of(conn: asyncpg.Connection, call: Call) -> int:
    """How many committed effects of ``call`` the tables hold."""
    committed = 0
    if call.transaction_ids:
        committed = await conn.fetchval(
            "SELECT count(*) FROM transaction_log WHERE status = 'committed' "
            "AND transaction_id = ANY($1::uuid[])",
            list(call.transaction_ids),
        )
    if call.kind == "create_request":
        by_marker = await conn.fetchval(
            "SELECT count(*) FROM service_requests WHERE description = $1", call.marker
        )
    elif call.kind == "use_materials":
        by_marker = await conn.fetchval(
            "SELECT count(*) FROM inventory_transactions WHERE idempotency_key = $1", call.marker
        )
    elif call.kind in RECOVERY_KINDS:
        by_marker = await conn.fetchval(
            "SELECT count(*) FROM workflow_transitions WHERE reason = $1", call.marker
        )
    else:  # advance: its transaction_log rows are the only trace of the call
        by_marker = committed
    return max(committed, by_marker)


async def _batch_problems(conn: asyncpg.Connection, batch: Batch) -> list[str]:
    if batch.result is None:
        return [f"batch {batch.reason} raised {batch.error} and returned no result"]
    result = batch.result
    problems = []
    listed = result.succeeded + result.stale + [rid for rid, _ in result.failed]
    if sorted(listed) != sorted(rid for rid, _ in batch.targets) or result.requested != len(
        batch.targets
    ):
        problems.append(f"batch {batch.reason}: {len(listed)} listed of {len(batch.targets)}")
    changed = Counter(
        r["request_id"]
        for r in await conn.fetch(
            "SELECT request_id FROM workflow_transitions WHERE reason = $1", batch.reason
        )
    )
    if changed != Counter(result.succeeded):
        problems.append(
            f"batch {batch.reason}: changed {sorted(changed)} but succeeded "
            f"{sorted(result.succeeded)}"
        )
    return problems


def _summary(tally: Tally, manager: EnhancedStateManager, elapsed: float) -> str:
    by_kind: dict[str, Counter[str]] = {}
    for call in tally.calls:
        by_kind.setdefault(call.kind, Counter())[call.outcome] += 1
    lines = [f"fault test: {elapsed:.0f} s, {tally.terminated} backends terminated"]
    for kind, counts in sorted(by_kind.items()):
        lines.append(
            f"  {kind:18} attempted {sum(counts.values()):5}  done {counts['done']:5}  "
            f"refused {counts['refused']:5}  failed {counts['failed']:4}  "
            f"in doubt {counts['in_doubt']:3}"
        )
    returned = [b.result for b in tally.batches if b.result is not None]
    lines.append(
        f"  batches {len(tally.batches)} (returned {len(returned)}): requests "
        f"{sum(len(b.targets) for b in tally.batches)}, succeeded "
        f"{sum(len(r.succeeded) for r in returned)}, stale {sum(len(r.stale) for r in returned)}"
        f", failed {sum(len(r.failed) for r in returned)}"
    )
    stats = manager.transactions.stats
    lines.append(
        f"  transactions: started {stats.started}, committed {stats.committed}, retried "
        f"{stats.retried}, in doubt {stats.in_doubt} (found committed {stats.resumed}, "
        f"unresolved {getattr(stats, 'unresolved', 0)}), release failures after the "
        f"transaction {getattr(stats, 'release_failures', '-')}"
    )
    return "\n".join(lines)


async def test_60s_of_terminated_backends_break_no_invariant_and_no_report(
    database_url: str,
) -> None:
    setup = await create_pool(database_url, min_size=1, max_size=2)
    try:
        world = await _make_world(setup)
    finally:
        await setup.close()
    proxy = CommitCutProxy(database_url, cut_probability=COMMIT_CUT_PROBABILITY)
    await proxy.start()
    pool = await create_pool(proxy.dsn, min_size=2, max_size=10)
    state_manager = EnhancedStateManager(pool, step_hook=_observe)
    recovery = WorkflowRecoveryManager(pool, transactions=state_manager.transactions)
    for _ in range(INITIAL_REQUESTS):
        await state_manager.create_request(world.client, workflow_type="repair", description="x")
    tally = Tally()
    stop_load, stop_killer = asyncio.Event(), asyncio.Event()
    killer = asyncio.create_task(_killer(database_url, tally, stop_killer))
    workers = [
        *(
            _staff_worker(pool, state_manager, world, tally, stop_load)
            for _ in range(STAFF_WORKERS)
        ),
        *(_admin_worker(pool, recovery, world, tally, stop_load) for _ in range(ADMIN_WORKERS)),
        _batch_worker(pool, recovery, world, tally, stop_load),
    ]
    started = time.monotonic()
    load = asyncio.gather(*workers)
    try:
        await asyncio.sleep(LOAD_S)
    finally:
        stop_load.set()
        await load  # each worker finishes the call it is in, under the killer
        stop_killer.set()
        await killer
        await pool.close()
        await proxy.close()
    elapsed = time.monotonic() - started

    conn = await asyncpg.connect(database_url)
    try:
        violations = await _violations(conn)
        wrong_reports = []
        wrong_by_kind: Counter[str] = Counter()
        for call in tally.calls:
            effects = await _effects_of(conn, call)
            if call.outcome in ("refused", "failed") and effects:
                wrong_reports.append(f"{call.kind} #{call.request_id} {call.outcome} committed")
                wrong_by_kind[f"{call.kind} reported {call.outcome}, committed"] += 1
            if call.outcome == "done" and effects != 1:
                wrong_reports.append(f"{call.kind} #{call.request_id} done, {effects} effects")
                wrong_by_kind[f"{call.kind} reported done, {effects} effects"] += 1
        batch_problems = [p for b in tally.batches for p in await _batch_problems(conn, b)]
    finally:
        await conn.close()
    print(_summary(tally, state_manager, elapsed))
    print(f"  COMMIT answers cut by the proxy: {proxy.cuts}")
    print(
        f"  checks: {sum(map(len, violations.values()))} invariant violations, "
        f"{len(wrong_reports)} wrong reports, {len(batch_problems)} batch problems"
    )
    for name, rows in violations.items():
        print(f"    violation: {name}: {rows}")
    for kind, count in sorted(wrong_by_kind.items()):
        print(f"    wrong: {kind} x{count}")
    for line in [*wrong_reports, *batch_problems][:20]:
        print("   ", line)

    assert violations == {}
    assert wrong_reports == []
    assert batch_problems == []
    assert not [c for c in tally.calls if c.outcome == "in_doubt"]
    # the fault and the load were real
    assert elapsed >= LOAD_S
    assert tally.terminated > LOAD_S * 10
    assert Counter(c.outcome for c in tally.calls)["done"] > 100
    assert len(tally.batches) >= 5
