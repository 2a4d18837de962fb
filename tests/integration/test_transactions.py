"""TransactionalStateManager / TransactionContext against a real PostgreSQL: commit and
rollback audit rows, savepoints, retry of the whole transaction on a real deadlock, the
lost-COMMIT-answer case."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from database import transaction_log
from recovery.transaction_context import (
    AFTER_COMMIT,
    TransactionAlreadyCommittedError,
    is_transaction_retryable,
)
from recovery.transactions import (
    TransactionalStateManager,
    TransactionContext,
    TransactionRetryPolicy,
)

FAST = TransactionRetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.005)


async def _material(pool: asyncpg.Pool, sku: str) -> int:
    return await pool.fetchval(
        "INSERT INTO materials (sku, name, balance) VALUES ($1, $1, 0) RETURNING id", sku
    )


async def _rows(pool: asyncpg.Pool, transaction_id: uuid.UUID) -> list[asyncpg.Record]:
    return await transaction_log.for_transaction(pool, transaction_id)


async def test_commit_writes_one_committed_row_with_the_recorded_operations(
    pool: asyncpg.Pool,
) -> None:
    manager = TransactionalStateManager(pool, retry_policy=FAST)
    material_id = await _material(pool, "cable")
    async with manager.transaction("rename", actor=None) as ctx, ctx.step("rename"):
        await ctx.conn.execute("UPDATE materials SET name = 'Cable' WHERE id = $1", material_id)
        ctx.record("material", material_id, before={"name": "cable"}, after={"name": "Cable"})
    assert await pool.fetchval("SELECT name FROM materials WHERE id = $1", material_id) == "Cable"
    rows = await _rows(pool, ctx.transaction_id)
    assert [(r["status"], r["operation"], r["attempt"]) for r in rows] == [
        ("committed", "rename", 1)
    ]
    steps = rows[0]["steps"]
    assert steps[0]["step"] == "rename" and steps[0]["status"] == "done"
    assert steps[0]["operations"] == [
        {"entity": "material", "id": material_id, "before": {"name": "cable"},
         "after": {"name": "Cable"}}
    ]  # fmt: skip
    assert [s["step"] for s in steps] == ["rename", "before_commit"]


async def test_exception_rolls_back_and_the_rollback_row_survives(pool: asyncpg.Pool) -> None:
    manager = TransactionalStateManager(pool, retry_policy=FAST)
    material_id = await _material(pool, "cable")
    with pytest.raises(RuntimeError, match="boom"):
        async with manager.transaction("rename", actor=None) as ctx:
            async with ctx.step("rename"):
                await ctx.conn.execute(
                    "UPDATE materials SET name = 'Cable' WHERE id = $1", material_id
                )
                ctx.record("material", material_id, before={"name": "cable"}, after={})
            async with ctx.step("second"):
                raise RuntimeError("boom, call +998 90 123 45 67")
    assert await pool.fetchval("SELECT name FROM materials WHERE id = $1", material_id) == "cable"
    rows = await _rows(pool, ctx.transaction_id)
    assert [r["status"] for r in rows] == ["rolled_back"]
    row = rows[0]
    assert row["error_category"] == "system"
    assert row["error_message"].startswith("step second: RuntimeError: boom")
    assert "123 45 67" not in row["error_message"]  # masked before it is written
    assert [(s["step"], s["status"]) for s in row["steps"]] == [
        ("rename", "done"),
        ("second", "failed"),
    ]
    assert manager.stats.rolled_back == 1 and manager.stats.committed == 0


async def test_savepoint_rolls_back_only_the_nested_step(pool: asyncpg.Pool) -> None:
    manager = TransactionalStateManager(pool, retry_policy=FAST)
    first, second = await _material(pool, "a"), await _material(pool, "b")

    async def body(ctx: TransactionContext) -> None:
        await ctx.conn.execute("UPDATE materials SET name = 'A' WHERE id = $1", first)
        with pytest.raises(asyncpg.CheckViolationError):
            async with ctx.savepoint("nested"):
                await ctx.conn.execute("UPDATE materials SET name = 'B' WHERE id = $1", second)
                await ctx.conn.execute(
                    "INSERT INTO inventory_transactions (material_id, kind, quantity, "
                    "idempotency_key) VALUES ($1, 'receipt', 0, 'zero')",
                    second,
                )
        # the transaction is still usable after the savepoint rolled back
        await ctx.conn.execute("UPDATE materials SET unit = 'm' WHERE id = $1", first)

    await manager.run("nested", body)
    names = dict(await pool.fetch("SELECT id, name || '/' || unit FROM materials"))
    assert names == {first: "A/m", second: "b/pcs"}
    assert await pool.fetchval("SELECT count(*) FROM inventory_transactions") == 0
    (row,) = await pool.fetch("SELECT * FROM transaction_log")
    assert row["status"] == "committed"
    assert ("nested", "rolled_back") in [(s["step"], s["status"]) for s in row["steps"]]


async def test_run_with_parent_uses_a_savepoint_and_no_log_row_of_its_own(
    pool: asyncpg.Pool,
) -> None:
    manager = TransactionalStateManager(pool, retry_policy=FAST)
    material_id = await _material(pool, "a")

    async def inner(ctx: TransactionContext) -> None:
        await ctx.conn.execute("UPDATE materials SET name = 'inner' WHERE id = $1", material_id)
        raise ValueError("inner refused")

    async with manager.transaction("outer") as outer:
        await outer.conn.execute("UPDATE materials SET unit = 'kg' WHERE id = $1", material_id)
        with pytest.raises(ValueError):
            await manager.run("inner", inner, parent=outer)
    row = await pool.fetchrow("SELECT name, unit FROM materials WHERE id = $1", material_id)
    assert (row["name"], row["unit"]) == ("a", "kg")
    assert [r["operation"] for r in await pool.fetch("SELECT * FROM transaction_log")] == ["outer"]


async def test_real_deadlock_is_retried_and_both_transactions_commit(pool: asyncpg.Pool) -> None:
    """Two transactions lock two rows in opposite order: PostgreSQL aborts one with SQLSTATE
    40P01 (after deadlock_timeout, 1 s by default); it is retried and commits."""
    manager = TransactionalStateManager(pool, retry_policy=FAST)
    a, b = await _material(pool, "a"), await _material(pool, "b")
    both_hold_first_lock = asyncio.Barrier(2)

    def body_for(first: int, second: int, label: str):
        async def body(ctx: TransactionContext) -> str:
            await ctx.conn.execute("UPDATE materials SET name = $2 WHERE id = $1", first, label)
            if ctx.attempt == 1:
                await both_hold_first_lock.wait()
            await ctx.conn.execute("UPDATE materials SET unit = $2 WHERE id = $1", second, label)
            return label

        return body

    results = await asyncio.gather(
        manager.run("ab", body_for(a, b, "ab")), manager.run("ba", body_for(b, a, "ba"))
    )
    assert sorted(results) == ["ab", "ba"]
    statuses = await pool.fetch(
        "SELECT operation, status, attempt, error_category, error_message "
        "FROM transaction_log ORDER BY id"
    )
    retried = [r for r in statuses if r["status"] == "retried"]
    assert len(retried) == 1
    assert retried[0]["error_category"] == "transient"
    assert "DeadlockDetectedError" in retried[0]["error_message"]
    committed = sorted(
        (r["operation"], r["attempt"]) for r in statuses if r["status"] == "committed"
    )
    assert committed in ([("ab", 1), ("ba", 2)], [("ab", 2), ("ba", 1)])
    assert manager.stats.retried == 1


async def test_retryable_failure_gives_up_after_the_policy_attempts(pool: asyncpg.Pool) -> None:
    manager = TransactionalStateManager(pool, retry_policy=FAST)
    calls = 0

    async def body(ctx: TransactionContext) -> None:
        nonlocal calls
        calls += 1
        await ctx.conn.execute(
            "DO $$ BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = 'serialization_failure'; END $$"
        )

    with pytest.raises(asyncpg.SerializationError):
        await manager.run("always_conflicts", body)
    assert calls == FAST.max_attempts
    rows = await pool.fetch("SELECT status, attempt FROM transaction_log ORDER BY id")
    assert [(r["status"], r["attempt"]) for r in rows] == [
        ("retried", 1),
        ("retried", 2),
        ("rolled_back", 3),
    ]


async def test_non_retryable_failure_is_not_retried(pool: asyncpg.Pool) -> None:
    manager = TransactionalStateManager(pool, retry_policy=FAST)
    calls = 0

    async def body(ctx: TransactionContext) -> None:
        nonlocal calls
        calls += 1
        await ctx.conn.execute("INSERT INTO materials (sku, name) VALUES (NULL, 'x')")

    with pytest.raises(asyncpg.NotNullViolationError):
        await manager.run("bad_insert", body)
    assert calls == 1
    rows = await pool.fetch("SELECT status, error_category FROM transaction_log")
    assert [(r["status"], r["error_category"]) for r in rows] == [("rolled_back", "data")]


async def test_lost_commit_answer_is_resumed_not_repeated(pool: asyncpg.Pool) -> None:
    """The COMMIT succeeds but the connection dies before the caller learns it: the retry
    finds the committed row and resumes instead of applying the change again."""
    killed = False

    async def lose_commit_answer(ctx: TransactionContext, step: str) -> None:
        nonlocal killed
        if step == AFTER_COMMIT and not killed:
            killed = True
            await pool.fetchval("SELECT pg_terminate_backend($1, 5000)", ctx.backend_pid)
            await ctx.conn.execute("SELECT 1")  # raises: the connection is gone

    manager = TransactionalStateManager(pool, retry_policy=FAST, step_hook=lose_commit_answer)
    calls = 0

    async def body(ctx: TransactionContext) -> int:
        nonlocal calls
        calls += 1
        material_id = await ctx.conn.fetchval(
            "INSERT INTO materials (sku, name) VALUES ('once', 'once') RETURNING id"
        )
        ctx.record("material", material_id, after={"sku": "once"})
        return material_id

    async def resume(steps: list[dict]) -> int:
        return steps[0]["operations"][0]["id"]

    material_id = await manager.run("insert_once", body, resume=resume)
    assert calls == 1
    assert await pool.fetchval("SELECT array_agg(id) FROM materials") == [material_id]
    rows = await pool.fetch("SELECT status, attempt, error_category FROM transaction_log")
    assert sorted((r["status"], r["attempt"]) for r in rows) == [("committed", 1), ("failed", 1)]
    assert manager.stats.resumed == 1 and manager.stats.in_doubt == 1


async def test_lost_commit_answer_without_resume_raises_already_committed(
    pool: asyncpg.Pool,
) -> None:
    async def lose_commit_answer(ctx: TransactionContext, step: str) -> None:
        if step == AFTER_COMMIT and ctx.attempt == 1:
            await pool.fetchval("SELECT pg_terminate_backend($1, 5000)", ctx.backend_pid)
            await ctx.conn.execute("SELECT 1")

    manager = TransactionalStateManager(pool, retry_policy=FAST, step_hook=lose_commit_answer)

    async def body(ctx: TransactionContext) -> None:
        await ctx.conn.execute("INSERT INTO materials (sku, name) VALUES ('once', 'once')")

    with pytest.raises(TransactionAlreadyCommittedError):
        await manager.run("insert_once", body)
    assert await pool.fetchval("SELECT count(*) FROM materials") == 1


def test_retry_policy_validates_itself_and_bounds_the_backoff() -> None:
    with pytest.raises(ValueError):
        TransactionRetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        TransactionRetryPolicy(base_delay_s=1.0, max_delay_s=0.5)
    policy = TransactionRetryPolicy(max_attempts=5, base_delay_s=0.1, max_delay_s=0.3)
    wait = policy.wait_strategy()

    class _State:
        def __init__(self, attempt_number: int) -> None:
            self.attempt_number = attempt_number

    for attempt, cap in [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.3), (10, 0.3)]:
        delays = [wait(_State(attempt)) for _ in range(200)]  # type: ignore[arg-type]
        assert all(0 <= d <= cap for d in delays)
        assert max(delays) > cap / 2  # full jitter spreads over the whole window


def test_retryable_is_the_transaction_strategy_of_classify() -> None:
    assert is_transaction_retryable(asyncpg.SerializationError("x"))
    assert is_transaction_retryable(asyncpg.DeadlockDetectedError("x"))
    assert is_transaction_retryable(ConnectionResetError())
    assert not is_transaction_retryable(asyncpg.UniqueViolationError("x"))
    assert not is_transaction_retryable(RuntimeError("x"))
