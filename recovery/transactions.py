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
and retries the whole transaction (with tenacity) when ``is_transaction_retryable``: the
connection-lost family (``recovery.connection_lost.is_connection_lost``: class 08,
57P01..57P03, asyncpg's "cannot switch to state", closed or released connections, dropped
sockets, 25P02 caused by one of these or by 40001/40P01), 40001 serialization_failure,
40P01 deadlock_detected and the other transient verdicts of ``classify``.

In-doubt resolution: every attempt of one call shares a ``transaction_id``. An attempt that
failed while its COMMIT was on its way (``commit_outcome_unknown``) may have committed; the
next attempt first looks for a ``committed`` row of that id, and when the last attempt is
the one in doubt the log is read after it (``TransactionRetryPolicy.in_doubt_lookups``).
Found: the change is not applied again and ``resume`` builds the caller's result. Not found:
the attempt rolled back. So ``run`` raising means nothing was committed, except for
``TransactionInDoubtError`` (the log stayed unreadable). A failed release after COMMIT
answered is not the operation's failure (``_release``).

Nested steps use savepoints: ``ctx.savepoint(name)``, or ``run(..., parent=ctx)``, which runs
an operation inside the caller's transaction (no retry and no log row of its own; the
outer transaction owns both).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal, TypeVar

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from database import transaction_log
from recovery.actors import Actor
from recovery.classification import classify
from recovery.exceptions import TransactionInDoubtError
from recovery.in_doubt import InDoubtResolution, ResumeFn
from recovery.masking import mask_sensitive
from recovery.retry import TransactionRetryPolicy as TransactionRetryPolicy
from recovery.transaction_context import (
    AFTER_COMMIT,
    BEFORE_COMMIT,
    COMMITTED,
    FAILED,
    RETRIED,
    ROLLED_BACK,
    StepHook,
    TransactionAlreadyCommittedError,
    TransactionStats,
    commit_outcome_unknown,
    is_transaction_retryable,
    jsonable,
    log_retry,
    rollback_quietly,
)
from recovery.transaction_context import TransactionContext as TransactionContext

log = logging.getLogger(__name__)

T = TypeVar("T")


class TransactionalStateManager(InDoubtResolution):
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
        isolation: Literal[
            "read_committed", "read_uncommitted", "repeatable_read", "serializable"
        ] = "read_committed",
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
        actor: Actor | None = None,
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
        conn = await self.pool.acquire()
        ctx = TransactionContext(
            conn,
            transaction_id=transaction_id,
            operation=operation,
            attempt=attempt,
            actor=actor,
            step_hook=self.step_hook,
        )
        try:
            tr = conn.transaction(isolation=self.isolation)
            try:
                await tr.start()
                yield ctx
                async with ctx.step(BEFORE_COMMIT):
                    await _log_committed(ctx, started)
                commit_phase = True
                await tr.commit()
                self.stats.committed += 1
                await ctx.run_hook(AFTER_COMMIT)
            except BaseException as exc:
                failure = exc
                if not commit_phase:
                    await rollback_quietly(tr, operation)
        finally:
            await self._release(conn, operation)
        if failure is None:
            return
        if isinstance(failure, Exception):
            await self._failed(ctx, failure, commit_phase, max_attempts, started)
        raise failure

    async def _failed(
        self,
        ctx: TransactionContext,
        failure: Exception,
        commit_phase: bool,
        max_attempts: int,
        started: float,
    ) -> None:
        """After a failed attempt (rolled back unless it failed in ``commit_phase``): mark
        a COMMIT whose outcome is unknown, and write the failure's log row."""
        if commit_phase and commit_outcome_unknown(failure):
            ctx.outcome_unknown = True
        status = self._failure_status(failure, commit_phase, ctx.attempt, max_attempts)
        await self._log_failure(ctx, status, failure, started)

    async def run(
        self,
        operation: str,
        body: Callable[[TransactionContext], Awaitable[T]],
        *,
        actor: Actor | None = None,
        parent: TransactionContext | None = None,
        resume: ResumeFn[T] | None = None,
    ) -> T:
        """``await body(ctx)`` in a transaction, retried as a whole on transient failures.

        Args:
            operation: name for the audit trail.
            body: the work; it must use ``ctx.conn`` and may be run several times.
            actor: who performs it (``transaction_log`` stores its ``user_id``).
            parent: run inside this open transaction instead, as a savepoint (no retry,
                no log row of its own: the outer transaction owns them).
            resume: builds the result from the committed steps when an attempt whose
                COMMIT answer was lost is found committed (in-doubt resolution).

        Returns:
            What ``body`` returned (or ``resume``).

        Raises:
            Whatever ``body`` raised, after the rollback, and only when nothing committed:
            non-retryable errors at once, retryable ones when the policy's attempts are
            used up.
            TransactionAlreadyCommittedError: an attempt committed and no ``resume`` was
                given (the change is applied once; only the result is missing).
            TransactionInDoubtError: the last attempt's COMMIT outcome is unknown and
                ``transaction_log`` could not be read to settle it.
        """
        if parent is not None:
            async with parent.savepoint(operation):
                return await body(parent)
        transaction_id = uuid.uuid4()
        doubt = _Doubt()
        try:
            async for attempt in self._attempts():
                with attempt:
                    number = attempt.retry_state.attempt_number
                    return await self._attempt(
                        operation, body, actor, transaction_id, number, doubt, resume
                    )
        except Exception as failure:
            if not doubt.open or isinstance(
                failure, TransactionAlreadyCommittedError | TransactionInDoubtError
            ):
                raise
            return await self._settle(
                transaction_id, operation, doubt.found, doubt.unsettled, resume, failure
            )
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def _attempts(self) -> AsyncRetrying:
        """The attempts of one ``run``: up to the policy's ``max_attempts``, its backoff
        between them, retrying what ``is_transaction_retryable`` accepts."""
        policy = self.retry_policy
        return AsyncRetrying(
            stop=stop_after_attempt(policy.max_attempts),
            wait=policy.wait_strategy(),
            retry=retry_if_exception(is_transaction_retryable),
            before_sleep=log_retry,
            reraise=True,
        )

    async def _attempt(
        self,
        operation: str,
        body: Callable[[TransactionContext], Awaitable[T]],
        actor: Actor | None,
        transaction_id: uuid.UUID,
        number: int,
        doubt: _Doubt,
        resume: ResumeFn[T] | None,
    ) -> T:
        """Attempt ``number`` of ``run``: first settle an earlier attempt in doubt (one
        found committed is answered from ``resume``), else ``body`` in a new transaction;
        an attempt failing with its COMMIT outcome unknown is noted in ``doubt``."""
        if doubt.unsettled is not None and doubt.found is None:
            doubt.found = await self._committed(transaction_id, operation, doubt.unsettled)
            doubt.unsettled = None
        if doubt.found is not None:
            return await self._resume(transaction_id, operation, doubt.found, resume)
        ctx: TransactionContext | None = None
        try:
            async with self.transaction(
                operation,
                actor=actor,
                transaction_id=transaction_id,
                attempt=number,
                max_attempts=self.retry_policy.max_attempts,
            ) as ctx:
                return await body(ctx)
        finally:
            if ctx is not None and ctx.outcome_unknown:
                doubt.unsettled = ctx.backend_pid

    def _failure_status(
        self, exc: Exception, commit_phase: bool, attempt: int, max_attempts: int
    ) -> str:
        if commit_phase and commit_outcome_unknown(exc):
            self.stats.in_doubt += 1
            return FAILED
        if attempt < max_attempts and is_transaction_retryable(exc):
            return RETRIED
        self.stats.rolled_back += 1
        return ROLLED_BACK

    async def _release(self, conn: asyncpg.pool.PoolConnectionProxy, operation: str) -> None:
        """Return the connection to the pool; never raises an ``Exception``.

        asyncpg resets a released connection first; on a connection the server ended that
        reset fails (``InternalClientError`` "cannot switch to state ...", ``InterfaceError``,
        ``OSError``) and asyncpg terminates the connection instead, freeing its pool slot.
        The transaction's outcome is known by then (COMMIT answered, or rolled back), so the
        failure is not the operation's: reporting it would call a committed change failed.
        """
        try:
            await self.pool.release(conn)
        except Exception as exc:
            self.stats.release_failures += 1
            log.debug("release after %s failed: %s", operation, type(exc).__name__)

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
                steps=jsonable(ctx.steps),
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


async def _log_committed(ctx: TransactionContext, started: float) -> None:
    """The ``committed`` row of ``ctx``, written inside its transaction just before COMMIT
    (``started``: ``time.perf_counter()`` at the start, for the duration in ms)."""
    await transaction_log.insert(
        ctx.conn,
        transaction_id=ctx.transaction_id,
        operation=ctx.operation,
        status=COMMITTED,
        steps=jsonable(ctx.steps),
        actor_id=ctx.actor_id,
        attempt=ctx.attempt,
        duration_ms=(time.perf_counter() - started) * 1000,
    )


@dataclass(slots=True)
class _Doubt:
    """An attempt of one ``run`` in doubt: ``unsettled``, the backend of an attempt that
    failed with its COMMIT outcome unknown, until a lookup settled it; ``found``, the
    committed row, once a lookup saw it."""

    unsettled: int | None = None
    found: transaction_log.CommittedEntry | None = None

    @property
    def open(self) -> bool:
        """Whether an attempt was in doubt (settled or not)."""
        return self.unsettled is not None or self.found is not None
