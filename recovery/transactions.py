"""Transactional state changes: one database transaction per operation, with an audit trail,
savepoints for nested steps and retry of the whole transaction on transient failures.

``TransactionalStateManager.transaction(operation)`` opens a transaction on a pooled
connection and yields a ``TransactionContext``. The caller runs its steps
(``ctx.step(name)``), records each change (``ctx.record(entity, id, before=, after=)``) and
leaves the block:

- normally: a ``committed`` row is written to ``transaction_log`` inside the transaction,
  then COMMIT. The row exists exactly when the transaction committed;
- with any exception: ROLLBACK, then one row saying so (``rolled_back``, or ``retried`` when
  the operation will be retried, or ``failed`` when the COMMIT answer was lost and the
  outcome is unknown) is written on another pooled connection, so it survives the rollback.

``TransactionalStateManager.run(operation, body)`` runs ``body(ctx)`` in such a transaction
and retries the whole transaction (with tenacity) when ``classify(exc)`` says
``RetryStrategy.TRANSACTION``: SQLSTATE 40001 serialization_failure, 40P01 deadlock_detected,
class 08 connection exceptions, 57P01..57P03 and dropped connections. Every attempt of one
call shares a ``transaction_id``; before a retry the log is checked for a ``committed`` row of
that id, so an attempt whose COMMIT succeeded but whose answer was lost is never applied a
second time (``resume`` builds the result instead).

Nested steps use savepoints: ``ctx.savepoint(name)``, or ``run(..., parent=ctx)``, which runs
an operation inside the caller's transaction (no retry and no log row of its own; the
outer transaction owns both).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

from database import transaction_log
from recovery.classification import RetryStrategy, classify
from recovery.masking import mask_sensitive

log = logging.getLogger(__name__)

T = TypeVar("T")

StepHook = Callable[["TransactionContext", str], Awaitable[None]]
"""``hook(ctx, step_name)``, awaited at the start of every step, before COMMIT
(``before_commit``) and after COMMIT returned (``after_commit``). For tracing and for fault
injection in tests; an exception it raises is a failure of that step."""

BEFORE_COMMIT = "before_commit"
AFTER_COMMIT = "after_commit"

# Statuses of transaction_log rows (CHECK constraint of the table).
COMMITTED, ROLLED_BACK, RETRIED, FAILED = "committed", "rolled_back", "retried", "failed"


@dataclass(frozen=True, slots=True)
class TransactionRetryPolicy:
    """How a transaction that failed transiently is retried (settings ``DB_RETRY_*``).

    ``attempts`` counts every attempt, the first included. The wait before retry ``n``
    (n = 1, 2, ...) is exponential backoff with full jitter:
    ``uniform(0, min(max_delay_s, base_delay_s * 2 ** (n - 1)))`` seconds.

    Raises:
        ValueError: attempts < 1, a delay <= 0, or ``max_delay_s`` < ``base_delay_s``.
    """

    attempts: int = 3
    base_delay_s: float = 0.05
    max_delay_s: float = 1.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base_delay_s <= 0 or self.max_delay_s <= 0:
            raise ValueError("delays must be positive")
        if self.max_delay_s < self.base_delay_s:
            raise ValueError("max_delay_s must not be below base_delay_s")

    def wait_strategy(self) -> wait_random_exponential:
        """The tenacity wait implementing the formula above."""
        return wait_random_exponential(multiplier=self.base_delay_s, max=self.max_delay_s)


def is_transaction_retryable(exc: BaseException) -> bool:
    """True when the whole transaction should be repeated (``RetryStrategy.TRANSACTION``)."""
    return isinstance(exc, Exception) and classify(exc).strategy is RetryStrategy.TRANSACTION


def _commit_outcome_unknown(exc: BaseException) -> bool:
    """An error during COMMIT leaves the outcome unknown unless the server answered with an
    error of its own (then it rolled back); connection classes 08/57 mean no answer."""
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "") or "")[:2] in ("08", "57")
    return True


def _jsonable(value: Any) -> Any:
    """``value`` as JSON-native data (records and dicts as objects, other values as text)."""
    if isinstance(value, asyncpg.Record):
        value = dict(value)
    return json.loads(json.dumps(value, default=str))


class TransactionAlreadyCommittedError(Exception):
    """A retried operation found that an earlier attempt committed, and the caller gave no
    ``resume`` to build its result. The change is applied (once); only the result is
    missing."""

    def __init__(self, transaction_id: uuid.UUID, operation: str) -> None:
        super().__init__(f"{operation} {transaction_id} committed by an earlier attempt")
        self.transaction_id = transaction_id
        self.operation = operation


@dataclass(slots=True)
class TransactionStats:
    """Counters of this process since start (the database has the history of all)."""

    started: int = 0
    committed: int = 0
    rolled_back: int = 0
    retried: int = 0
    in_doubt: int = 0
    resumed: int = 0


class TransactionContext:
    """One open transaction: its connection and the audit of what it did.

    Attributes:
        conn: the connection holding the transaction (use it for every statement).
        transaction_id: shared by all attempts of one logical transaction.
        operation: the operation's name (``transaction_log.operation``).
        attempt: 1 for the first attempt.
        actor_id: the user performing it, when known.
        steps: the audit, JSON-native: ``[{"step", "status", "operations": [{"entity",
            "id", "before", "after"}]}]``; status running, done, failed or rolled_back (a
            savepoint rolled back).
    """

    def __init__(
        self,
        conn: asyncpg.Connection,
        *,
        transaction_id: uuid.UUID,
        operation: str,
        attempt: int = 1,
        actor_id: int | None = None,
        step_hook: StepHook | None = None,
    ) -> None:
        self.conn = conn
        self.transaction_id = transaction_id
        self.operation = operation
        self.attempt = attempt
        self.actor_id = actor_id
        self.steps: list[dict[str, Any]] = []
        self._step_hook = step_hook

    @property
    def backend_pid(self) -> int:
        """The PostgreSQL backend process id of the connection."""
        return self.conn.get_server_pid()

    @property
    def failed_step(self) -> str | None:
        """The name of the last step that failed, or None."""
        for entry in reversed(self.steps):
            if entry["status"] in ("failed", "rolled_back"):
                return entry["step"]
        return None

    def record(self, entity: str, entity_id: Any, *, before: Any = None, after: Any = None) -> None:
        """Note one change (``before``/``after`` snapshots, None for create/delete) under the
        current step (a step named after the operation when none is open)."""
        if not self.steps:
            self.steps.append({"step": self.operation, "status": "running", "operations": []})
        if entity == "service_request":  # every later log line of this work names it
            structlog.contextvars.bind_contextvars(request_id=entity_id)
        self.steps[-1]["operations"].append(
            {
                "entity": entity,
                "id": _jsonable(entity_id),
                "before": _jsonable(before),
                "after": _jsonable(after),
            }
        )

    async def run_hook(self, name: str) -> None:
        """Await the step hook for ``name`` (no-op without a hook)."""
        if self._step_hook is not None:
            await self._step_hook(self, name)

    @asynccontextmanager
    async def step(self, name: str) -> AsyncIterator[None]:
        """A named step of the transaction: the hook runs first, the outcome is audited.

        An exception propagates (the transaction as a whole then rolls back).
        """
        entry: dict[str, Any] = {"step": name, "status": "running", "operations": []}
        self.steps.append(entry)
        try:
            await self.run_hook(name)
            yield
        except BaseException:
            entry["status"] = "failed"
            raise
        if entry["status"] == "running":
            entry["status"] = "done"

    @asynccontextmanager
    async def savepoint(self, name: str) -> AsyncIterator[None]:
        """A nested step inside ``SAVEPOINT``: on an exception only the step's own changes are
        rolled back (``ROLLBACK TO SAVEPOINT``), the step is audited ``rolled_back`` and the
        exception propagates; a caller that catches it may go on with the transaction.
        """
        entry: dict[str, Any] = {"step": name, "status": "running", "operations": []}
        self.steps.append(entry)
        savepoint = self.conn.transaction()  # nested in the open transaction: a SAVEPOINT
        await savepoint.start()
        try:
            await self.run_hook(name)
            yield
        except BaseException:
            entry["status"] = "rolled_back"
            try:
                await savepoint.rollback()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                log.debug("rollback to savepoint %s failed: %s", name, exc)
            raise
        await savepoint.commit()  # RELEASE SAVEPOINT
        if entry["status"] == "running":
            entry["status"] = "done"


ResumeFn = Callable[[list[dict[str, Any]]], Awaitable[T]]


class TransactionalStateManager:
    """Opens audited transactions and retries them on transient failures.

    Args:
        pool: asyncpg pool.
        retry_policy: attempts and backoff (default: 3 attempts, 0.05 s base, 1 s cap).
        step_hook: awaited at every step (see ``StepHook``); None in production unless
            tracing.
        isolation: PostgreSQL isolation level of the transactions (``read_committed``,
            ``repeatable_read`` or ``serializable``).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        retry_policy: TransactionRetryPolicy | None = None,
        step_hook: StepHook | None = None,
        isolation: str = "read_committed",
    ) -> None:
        self.pool = pool
        self.retry_policy = retry_policy or TransactionRetryPolicy()
        self.step_hook = step_hook
        self.isolation = isolation
        self.stats = TransactionStats()

    @asynccontextmanager
    async def transaction(
        self,
        operation: str,
        *,
        actor_id: int | None = None,
        transaction_id: uuid.UUID | None = None,
        attempt: int = 1,
        max_attempts: int = 1,
    ) -> AsyncIterator[TransactionContext]:
        """One transaction on a pooled connection (see the module docstring).

        ``attempt``/``max_attempts`` only decide the status of a failure's log row
        (``retried`` when a retryable failure has attempts left). Exceptions propagate
        unchanged after the rollback and its log row.
        """
        transaction_id = transaction_id or uuid.uuid4()
        started = time.perf_counter()
        self.stats.started += 1
        failure: BaseException | None = None
        commit_phase = False
        ctx: TransactionContext | None = None
        async with self.pool.acquire() as conn:
            ctx = TransactionContext(
                conn,
                transaction_id=transaction_id,
                operation=operation,
                attempt=attempt,
                actor_id=actor_id,
                step_hook=self.step_hook,
            )
            tr = conn.transaction(isolation=self.isolation)
            try:
                await tr.start()
                yield ctx
                async with ctx.step(BEFORE_COMMIT):
                    await transaction_log.insert(
                        conn,
                        transaction_id=transaction_id,
                        operation=operation,
                        status=COMMITTED,
                        steps=_jsonable(ctx.steps),
                        actor_id=actor_id,
                        attempt=attempt,
                        duration_ms=(time.perf_counter() - started) * 1000,
                    )
                commit_phase = True
                await tr.commit()
                self.stats.committed += 1
                await ctx.run_hook(AFTER_COMMIT)
            except BaseException as exc:
                failure = exc
                if not commit_phase:
                    await self._rollback(tr, operation)
        if failure is None:
            return
        if isinstance(failure, Exception):
            status = self._failure_status(failure, commit_phase, attempt, max_attempts)
            await self._log_failure(ctx, status, failure, started)
        raise failure

    async def run(
        self,
        operation: str,
        body: Callable[[TransactionContext], Awaitable[T]],
        *,
        actor_id: int | None = None,
        parent: TransactionContext | None = None,
        resume: ResumeFn[T] | None = None,
    ) -> T:
        """``await body(ctx)`` in a transaction, retried as a whole on transient failures.

        Args:
            operation: name for the audit trail.
            body: the work; it must use ``ctx.conn`` and may be run several times.
            actor_id: the user performing it.
            parent: run inside this open transaction instead, as a savepoint (no retry,
                no log row of its own: the outer transaction owns them).
            resume: builds the result from the committed steps when a retry finds that an
                earlier attempt committed (its COMMIT answer was lost).

        Returns:
            What ``body`` returned (or ``resume``).

        Raises:
            Whatever ``body`` raised, after the rollback: non-retryable errors at once,
            retryable ones when the policy's attempts are used up.
            TransactionAlreadyCommittedError: an earlier attempt committed and no
                ``resume`` was given.
        """
        if parent is not None:
            async with parent.savepoint(operation):
                return await body(parent)
        transaction_id = uuid.uuid4()
        policy = self.retry_policy
        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.attempts),
            wait=policy.wait_strategy(),
            retry=retry_if_exception(is_transaction_retryable),
            before_sleep=self._before_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                number = attempt.retry_state.attempt_number
                if number > 1:
                    committed = await transaction_log.find_committed(self.pool, transaction_id)
                    if committed is not None:
                        self.stats.resumed += 1
                        if resume is None:
                            raise TransactionAlreadyCommittedError(transaction_id, operation)
                        return await resume(committed.steps)
                async with self.transaction(
                    operation,
                    actor_id=actor_id,
                    transaction_id=transaction_id,
                    attempt=number,
                    max_attempts=policy.attempts,
                ) as ctx:
                    return await body(ctx)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def _failure_status(
        self, exc: Exception, commit_phase: bool, attempt: int, max_attempts: int
    ) -> str:
        if commit_phase and _commit_outcome_unknown(exc):
            self.stats.in_doubt += 1
            return FAILED
        if attempt < max_attempts and is_transaction_retryable(exc):
            return RETRIED
        self.stats.rolled_back += 1
        return ROLLED_BACK

    @staticmethod
    def _before_retry(state: RetryCallState) -> None:
        outcome = state.outcome
        exc = outcome.exception() if outcome is not None else None
        log.info(
            "retrying transaction after %s (attempt %d)",
            type(exc).__name__ if exc else "?",
            state.attempt_number,
        )

    async def _rollback(self, tr: asyncpg.transaction.Transaction, operation: str) -> None:
        try:
            await tr.rollback()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            # the connection is gone: the server has rolled the transaction back itself
            log.debug("rollback of %s failed: %s", operation, type(exc).__name__)

    async def _log_failure(
        self, ctx: TransactionContext | None, status: str, exc: Exception, started: float
    ) -> None:
        """Write the failure's audit row on another pooled connection; never raises."""
        if status == RETRIED:
            self.stats.retried += 1
        if ctx is None:  # pragma: no cover - the context exists once a connection was acquired
            return
        message = f"{type(exc).__name__}: {exc}"
        if ctx.failed_step:
            message = f"step {ctx.failed_step}: {message}"
        try:
            await transaction_log.insert(
                self.pool,
                transaction_id=ctx.transaction_id,
                operation=ctx.operation,
                status=status,
                steps=_jsonable(ctx.steps),
                actor_id=ctx.actor_id,
                error_category=classify(exc).category.value,
                error_message=mask_sensitive(message)[:2000],
                attempt=ctx.attempt,
                duration_ms=(time.perf_counter() - started) * 1000,
            )
        except Exception as log_exc:  # the database itself may be what failed
            log.warning(
                "could not write transaction_log (%s %s): %s",
                ctx.operation,
                status,
                type(log_exc).__name__,
            )
