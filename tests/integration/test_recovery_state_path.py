"""Recovery actions take the staff operations' path (``TransactionalStateManager.run``): a
``transaction_log`` row, the whole transaction retried after a terminated backend, a lost
COMMIT answer found committed and answered as done (also after the last attempt), an
asyncpg error at ``pool.release()`` after COMMIT never turning a committed action into a
failure; and a batch that counts every failure of one request and goes on."""

from __future__ import annotations

import asyncio
import errno
import logging
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from database import transaction_log
from recovery.actors import Actor
from recovery.exceptions import InvalidTransitionError, TransactionInDoubtError
from recovery.transaction_context import AFTER_COMMIT, recorded
from recovery.transactions import (
    TransactionalStateManager,
    TransactionContext,
    TransactionRetryPolicy,
)
from recovery.workflows import RecoveryAction, WorkflowRecoveryManager, failure_code
from tests.factories import make_request, make_user
from tests.integration.test_state_manager_ops import (
    FAST,
    Faults,
    lose_commit_answer,
    terminate_backend,
)
from tests.integration.workflow_recovery_support import (
    add_transition,
    connection_request_in_materials,
    snapshot,
)

Action = Callable[[TransactionContext], Awaitable[None]]


def _manager(pool: asyncpg.Pool, faults: Faults, policy: TransactionRetryPolicy = FAST):
    transactions = TransactionalStateManager(pool, retry_policy=policy, step_hook=faults)
    return WorkflowRecoveryManager(pool, transactions=transactions)


async def _stuck_in_review(pool: asyncpg.Pool, count: int = 1) -> tuple[Actor, list[int]]:
    admin = await make_user(pool, role="admin")
    client = await make_user(pool)
    await make_user(pool, role="controller")
    await make_user(pool, role="technician")
    ids = []
    for _ in range(count):
        row = await make_request(
            pool, client_id=client["id"], state="review", role="controller", hours_in_state=30
        )
        await add_transition(pool, row["id"], None, "new", kind="create", hours_ago=50)
        await add_transition(pool, row["id"], "new", "review", hours_ago=30)
        ids.append(row["id"])
    return Actor.of(admin), ids


async def _log(pool: asyncpg.Pool, operation: str) -> list[tuple[str, int]]:
    rows = await pool.fetch(
        "SELECT status, attempt FROM transaction_log WHERE operation = $1 ORDER BY id", operation
    )
    return [(r["status"], r["attempt"]) for r in rows]


async def _recovery_rows(pool: asyncpg.Pool, request_id: int) -> list[tuple[bool, str | None]]:
    rows = await pool.fetch(
        "SELECT success, error_message FROM workflow_recovery_log WHERE request_id = $1 "
        "ORDER BY id",
        request_id,
    )
    return [(r["success"], r["error_message"]) for r in rows]


async def _kinds(pool: asyncpg.Pool, request_id: int) -> list[str]:
    rows = await pool.fetch(
        "SELECT kind FROM workflow_transitions WHERE request_id = $1 ORDER BY id", request_id
    )
    return [r["kind"] for r in rows]


async def test_an_action_writes_one_committed_transaction_log_row(pool: asyncpg.Pool) -> None:
    faults = Faults(pool)
    admin, (request_id,) = await _stuck_in_review(pool)
    outcome = await _manager(pool, faults).apply(
        RecoveryAction.FORCE, request_id, expected_version=1, admin=admin, reason="on leave"
    )
    assert outcome.request["current_state"] == "in_work"
    row = await pool.fetchrow(
        "SELECT * FROM transaction_log WHERE operation = 'recovery.force_transition'"
    )
    assert (row["status"], row["attempt"], row["actor_id"]) == ("committed", 1, admin.user_id)
    assert recorded(row["steps"], "workflow_recovery_log")["id"] == outcome.log_id
    assert recorded(row["steps"], "service_request")["after"]["state"] == "in_work"
    assert [step for step, _ in faults.seen] == [
        "lock",
        "apply_state",
        "history",
        "compensation",
        "recovery_log",
        "outbox",
        "before_commit",
        AFTER_COMMIT,
    ]


async def test_a_terminated_backend_mid_action_is_retried_and_applied_once(
    pool: asyncpg.Pool,
) -> None:
    faults = Faults(pool)
    admin, (request_id,) = await _stuck_in_review(pool)
    faults.arm("history", terminate_backend(pool))  # after the UPDATE, before its history
    outcome = await _manager(pool, faults).apply(
        RecoveryAction.COMPLETE, request_id, expected_version=1, admin=admin
    )
    assert faults.fired == 1
    assert (outcome.request["status"], outcome.request["version"]) == ("completed", 2)
    assert await _kinds(pool, request_id) == ["create", "normal", "complete"]
    assert await _recovery_rows(pool, request_id) == [(True, None)]
    assert await _log(pool, "recovery.complete") == [("retried", 1), ("committed", 2)]


@pytest.mark.parametrize("attempts", [3, 1], ids=["a retry finds it", "after the last attempt"])
async def test_a_lost_commit_answer_is_answered_done_and_never_applied_twice(
    pool: asyncpg.Pool, attempts: int
) -> None:
    faults = Faults(pool)
    admin, s = await connection_request_in_materials(pool)
    request = s["request"]
    policy = TransactionRetryPolicy(max_attempts=attempts, base_delay_s=0.001, max_delay_s=0.005)
    manager = _manager(pool, faults, policy)
    preview = await manager.preview(RecoveryAction.RESET, request["id"])
    faults.arm(AFTER_COMMIT, lose_commit_answer(pool))

    outcome = await manager.apply(
        RecoveryAction.RESET,
        request["id"],
        expected_version=request["version"],
        admin=admin,
        expected_fingerprint=preview.fingerprint,
    )

    assert faults.fired == 1
    # the caller is told what happened: done, with the real result of the committed attempt
    assert outcome.request["current_state"] == "in_work"
    assert outcome.request["version"] == request["version"] + 1
    assert sum(r.quantity for r in outcome.reversals) == 17
    assert (await _kinds(pool, request["id"]))[-1] == "reset"
    assert (await _kinds(pool, request["id"])).count("reset") == 1
    assert dict(await pool.fetch("SELECT sku, balance FROM materials")) == {"CBL": 80, "RTR": 10}
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM workflow_recovery_log WHERE success AND request_id = $1",
            request["id"],
        )
        == 1
    )
    statuses = [status for status, _ in await _log(pool, "recovery.reset_state")]
    assert statuses == ["committed", "failed"]  # one commit; the attempt in doubt
    assert manager.transactions.stats.resumed == 1


async def test_an_asyncpg_error_at_release_after_commit_is_not_a_failure(
    pool: asyncpg.Pool, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """After COMMIT answered, the backend is terminated. The pool's release sends nothing
    on an ordinary connection (``database.pool``), so asyncpg meets the dead backend at the
    release (a failing rollback or reset: "cannot switch to state ...", a closed connection)
    or at the connection's next use, the next action's first statement, which is then
    retried. Repeated until asyncpg's "cannot switch to state" error was met at least once;
    neither way is a failure of any action."""
    killer = await asyncpg.connect(database_url)

    async def terminate_after_commit(ctx: TransactionContext) -> None:
        await killer.fetchval("SELECT pg_terminate_backend($1)", ctx.backend_pid)
        loop = asyncio.get_running_loop()
        until = loop.time() + 0.0005 * (faults.fired % 5)
        while loop.time() < until:  # noqa: ASYNC110 - let the FATAL arrive, not the close
            await asyncio.sleep(0)

    faults = Faults(pool)
    admin, ids = await _stuck_in_review(pool, 40)
    manager = _manager(pool, faults)
    faults.arm(AFTER_COMMIT, terminate_after_commit, only_attempt=None)
    caplog.set_level(logging.DEBUG, logger="recovery.transactions")
    done = []
    try:
        for request_id in ids:
            outcome = await manager.apply(
                RecoveryAction.FORCE, request_id, expected_version=1, admin=admin
            )
            done.append(outcome.request["id"])
            if any("InternalClientError" in m for m in caplog.messages):
                break
    finally:
        await killer.close()
    met = [m for m in caplog.messages if "InternalClientError" in m]
    assert met, "the terminated backend was never met"
    assert all(m.startswith(("release after", "retrying transaction after")) for m in met)
    if any(m.startswith("release after") for m in met):
        assert manager.transactions.stats.release_failures >= 1
    # every action was answered done and committed exactly once (read on a connection of
    # its own: the pool may still hold the connection whose backend was just terminated)
    reader = await asyncpg.connect(database_url)
    try:
        rows = await reader.fetch(
            "SELECT request_id, count(*) AS n FROM workflow_transitions WHERE kind = 'force' "
            "GROUP BY 1"
        )
    finally:
        await reader.close()
    assert {r["request_id"]: r["n"] for r in rows} == dict.fromkeys(done, 1)
    assert faults.fired == len(done)  # one commit each: nothing was applied twice


async def test_a_failure_on_every_attempt_changes_nothing_and_is_logged(
    pool: asyncpg.Pool,
) -> None:
    faults = Faults(pool)
    admin, (request_id,) = await _stuck_in_review(pool)
    before = await snapshot(pool)
    faults.arm("apply_state", terminate_backend(pool), only_attempt=None)
    with pytest.raises((asyncpg.InterfaceError, asyncpg.PostgresConnectionError, OSError)) as info:
        await _manager(pool, faults).apply(
            RecoveryAction.FORCE, request_id, expected_version=1, admin=admin
        )
    assert failure_code(info.value) == "unavailable"
    assert faults.fired == FAST.max_attempts
    assert await snapshot(pool) == before
    ((success, message),) = await _recovery_rows(pool, request_id)
    assert not success and message.startswith("unavailable: ")
    assert [s for s, _ in await _log(pool, "recovery.force_transition")] == [
        "retried",
        "retried",
        "rolled_back",
    ]


async def test_a_refusal_is_still_a_refusal_and_logged(pool: asyncpg.Pool) -> None:
    faults = Faults(pool)
    admin, (request_id,) = await _stuck_in_review(pool)
    await pool.execute("DELETE FROM workflow_transitions WHERE request_id = $1", request_id)
    with pytest.raises(InvalidTransitionError):
        await _manager(pool, faults).apply(
            RecoveryAction.RESET, request_id, expected_version=1, admin=admin
        )
    assert await _recovery_rows(pool, request_id) == [
        (
            False,
            f"no_history: request {request_id} in state review: no earlier state in the history",
        )
    ]
    assert await _log(pool, "recovery.reset_state") == [("rolled_back", 1)]


class _PerRequest(Faults):
    """Fires the action armed for the request being changed (known from the recorded
    ``service_request`` change, i.e. from step ``history`` on), on every attempt."""

    def __init__(self, pool: asyncpg.Pool, actions: dict[int, Action]) -> None:
        super().__init__(pool)
        self.actions = actions

    async def __call__(self, ctx: TransactionContext, step: str) -> None:
        changed = recorded(ctx.steps, "service_request")
        if step == "history" and changed is not None and changed["id"] in self.actions:
            self.fired += 1
            await self.actions[changed["id"]](ctx)


async def test_a_batch_never_aborts_and_reports_every_request(pool: asyncpg.Pool) -> None:
    admin, ids = await _stuck_in_review(pool, 6)
    killed, timed_out, buggy, stale = ids[1], ids[2], ids[3], ids[4]

    async def timeout(_ctx: TransactionContext) -> None:
        raise TimeoutError  # what asyncpg's command_timeout raises

    async def bug(_ctx: TransactionContext) -> None:
        raise KeyError("workflow_type")

    async def reset_by_peer(_ctx: TransactionContext) -> None:
        raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")

    faults = _PerRequest(
        pool,
        {killed: terminate_backend(pool), timed_out: timeout, buggy: bug, ids[5]: reset_by_peer},
    )
    await pool.execute("UPDATE service_requests SET version = 2 WHERE id = $1", stale)
    targets = [(request_id, 1) for request_id in ids]

    result = await _manager(pool, faults).apply_batch(RecoveryAction.FORCE, targets, admin=admin)

    assert result.requested == 6
    assert result.succeeded == [ids[0]]
    assert result.stale == [stale]
    assert result.failed == [
        (killed, "unavailable"),
        (timed_out, "unavailable"),
        (buggy, "error"),
        (ids[5], "unavailable"),
    ]
    assert len(result.succeeded) + len(result.stale) + len(result.failed) == result.requested
    states = dict(
        await pool.fetch(
            "SELECT id, current_state FROM service_requests WHERE id = ANY($1::bigint[])", ids
        )
    )
    assert states == {i: "in_work" if i == ids[0] else "review" for i in ids}
    logs = await pool.fetch(
        "SELECT request_id, success, error_message FROM workflow_recovery_log WHERE batch_id = $1",
        result.batch_id,
    )
    failures = {r["request_id"]: r["error_message"] for r in logs if not r["success"]}
    assert failures.keys() == {killed, timed_out, buggy, ids[5], stale}
    assert failures[killed].startswith("unavailable: ")
    assert failures[timed_out] == "unavailable: TimeoutError"
    assert failures[buggy] == "error: KeyError"
    assert failures[ids[5]] == "unavailable: ConnectionResetError"
    assert failures[stale].startswith("stale: ")
    assert [r["request_id"] for r in logs if r["success"]] == [ids[0]]


async def test_the_lookup_waits_while_the_attempt_in_doubt_is_still_open(
    pool: asyncpg.Pool,
) -> None:
    """A COMMIT still on its way (a slow or cut network) is waited for, not ruled out: the
    lookup answers only once the attempt's backend has left its transaction."""
    policy = TransactionRetryPolicy(
        max_attempts=1, base_delay_s=0.01, max_delay_s=0.05, in_doubt_lookups=40
    )
    transactions = TransactionalStateManager(pool, retry_policy=policy)
    transaction_id = uuid.uuid4()
    async with pool.acquire() as attempt:
        committing = attempt.transaction()
        await committing.start()
        await transaction_log.insert(
            attempt, transaction_id=transaction_id, operation="x", status="committed", steps=[]
        )
        lookup = asyncio.create_task(
            transactions._committed(transaction_id, "x", attempt.get_server_pid())
        )
        await asyncio.sleep(0.2)
        assert not lookup.done()  # the row is not visible yet, and the attempt is open
        await committing.commit()
        assert (await lookup) is not None

        never = attempt.transaction()
        await never.start()  # an attempt whose COMMIT never arrives
        short = TransactionalStateManager(
            pool, retry_policy=TransactionRetryPolicy(in_doubt_lookups=2, base_delay_s=0.01)
        )
        with pytest.raises(TransactionInDoubtError):
            await short._committed(uuid.uuid4(), "x", attempt.get_server_pid())
        await never.rollback()
    assert short.stats.unresolved == 1
