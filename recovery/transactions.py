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
connection-lost family (``recovery.classification.is_connection_lost``: class 08,
57P01..57P03, asyncpg's "cannot switch to state", closed or released connections, dropped
sockets, 25P02 caused by one of these or by 40001/40P01), 40001 serialization_failure,
40P01 deadlock_detected and the other transient verdicts of ``classify``.

In-doubt resolution: every attempt of one call shares a ``transaction_id``. An attempt that
failed while its COMMIT was on its way (``commit_outcome_unknown``) may have committed; the
next attempt first looks for a ``committed`` row of that id, and when the last attempt is
the one in doubt the log is read after it (``TransactionRetryPolicy.in_doubt_lookups``).
Found: the change is not applied again and ``resume`` builds the caller's result. Not found:
the attempt rolled back. So ``run`` raising means nothing was committed, except for
``TransactionInDoubtError`` (the log stayed unreadable). A failure to release the
connection after COMMIT answered (asyncpg's reset of a connection the server ended) is not
the operation's failure.

Nested steps use savepoints: ``ctx.savepoint(name)``, or ``run(..., parent=ctx)``, which runs
an operation inside the caller's transaction (no retry and no log row of its own; the
outer transaction owns both).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

import asyncpg
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

from database import transaction_log
from database.pool import AnyConnection
from recovery.classification import RetryStrategy, classify, is_connection_lost
from recovery.exceptions import TransactionInDoubtError
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
    ``in_doubt_lookups``: after the last attempt failed with its COMMIT outcome unknown, how
    many times (same backoff) ``transaction_log`` is read to settle it before giving up
    with ``TransactionInDoubtError`` (10 lookups take at most about 7 s with the defaults).

    Raises:
        ValueError: attempts or in_doubt_lookups < 1, a delay <= 0, or ``max_delay_s`` <
            ``base_delay_s``.
    """

    attempts: int = 3
    base_delay_s: float = 0.05
    max_delay_s: float = 1.0
    in_doubt_lookups: int = 10

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.in_doubt_lookups < 1:
            raise ValueError("attempts and in_doubt_lookups must be at least 1")
        if self.base_delay_s <= 0 or self.max_delay_s <= 0:
            raise ValueError("delays must be positive")
        if self.max_delay_s < self.base_delay_s:
            raise ValueError("max_delay_s must not be below base_delay_s")

    def wait_strategy(self) -> wait_random_exponential:
        """The tenacity wait implementing the formula above."""
        return wait_random_exponential(multiplier=self.base_delay_s, max=self.max_delay_s)

    def delay_s(self, retry: int) -> float:
        """The formula above for retry ``retry`` (1, 2, ...), outside tenacity."""
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2 ** (retry - 1)))


def is_transaction_retryable(exc: BaseException) -> bool:
    """True when the whole transaction should be repeated (``RetryStrategy.TRANSACTION``):
    the connection-lost family (``is_connection_lost``), 40001, 40P01 and the other
    transient SQLSTATEs and timeouts of ``classify``."""
    if not isinstance(exc, Exception):
        return False
    return is_connection_lost(exc) or classify(exc).strategy is RetryStrategy.TRANSACTION


def commit_outcome_unknown(exc: BaseException) -> bool:
    """Whether an error raised while COMMIT was on its way leaves its outcome unknown.

    Known (rolled back) only when the server answered with an error of its own (a
    ``PostgresError`` outside the connection-lost family, e.g. 40001 or a deferred 23xxx).
    Everything else is unknown: the connection-lost family (08xxx, 57P01-57P03,
    ``InternalClientError``, ``InterfaceError``, ``OSError``), timeouts, and any exception
    of a step hook after COMMIT returned.
    """
    return not isinstance(exc, asyncpg.PostgresError) or is_connection_lost(exc)


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
    in_doubt: int = 0  # attempts whose COMMIT outcome was unknown when they failed
    resumed: int = 0  # operations found committed by such an attempt (answered from resume)
    unresolved: int = 0  # operations that ended with TransactionInDoubtError
    release_failures: int = 0  # connections the pool could not reset after the transaction


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
        outcome_unknown: set when the transaction failed while its COMMIT was on its way
            and nobody knows yet whether it committed (``commit_outcome_unknown``).
        backend_pid: the PostgreSQL backend process id of the connection.
    """

    def __init__(
        self,
        conn: AnyConnection,
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
        self.outcome_unknown = False
        self.backend_pid: int = conn.get_server_pid()
        self._step_hook = step_hook

    @property
    def failed_step(self) -> str | None:
        """The name of the last step that failed, or None."""
        for entry in reversed(self.steps):
            if entry["status"] in ("failed", "rolled_back"):
                return cast(str, entry["step"])
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
            except Exception as exc:  # the connection is gone: the whole transaction fails
                log.debug("rollback to savepoint %s failed: %s", name, type(exc).__name__)
            raise
        await savepoint.commit()  # RELEASE SAVEPOINT
        if entry["status"] == "running":
            entry["status"] = "done"


ResumeFn = Callable[[list[dict[str, Any]]], Awaitable[T]]


def recorded(steps: list[dict[str, Any]], entity: str) -> dict[str, Any] | None:
    """The first change of ``entity`` in a committed transaction's steps (``{"entity", "id",
    "before", "after"}``, as ``TransactionContext.record`` wrote it), or None."""
    for step in steps:
        for operation in step.get("operations", []):
            if operation["entity"] == entity:
                return cast(dict[str, Any], operation)
    return None


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
        conn = await self.pool.acquire()
        ctx = TransactionContext(
            conn,
            transaction_id=transaction_id,
            operation=operation,
            attempt=attempt,
            actor_id=actor_id,
            step_hook=self.step_hook,
        )
        try:
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
        finally:
            await self._release(conn, operation)
        if failure is None:
            return
        if isinstance(failure, Exception):
            if commit_phase and commit_outcome_unknown(failure):
                ctx.outcome_unknown = True
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
        policy = self.retry_policy
        retrying = AsyncRetrying(
            stop=stop_after_attempt(policy.attempts),
            wait=policy.wait_strategy(),
            retry=retry_if_exception(is_transaction_retryable),
            before_sleep=self._before_retry,
            reraise=True,
        )
        # The backend of an attempt that failed with its COMMIT outcome unknown, until a
        # lookup settled it; ``found``: the committed row, once a lookup saw it.
        unsettled: int | None = None
        found: transaction_log.CommittedEntry | None = None
        try:
            async for attempt in retrying:
                with attempt:
                    if unsettled is not None and found is None:
                        found = await self._committed(transaction_id, operation, unsettled)
                        unsettled = None
                    if found is not None:
                        return await self._resume(transaction_id, operation, found, resume)
                    ctx: TransactionContext | None = None
                    try:
                        async with self.transaction(
                            operation,
                            actor_id=actor_id,
                            transaction_id=transaction_id,
                            attempt=attempt.retry_state.attempt_number,
                            max_attempts=policy.attempts,
                        ) as ctx:
                            return await body(ctx)
                    finally:
                        if ctx is not None and ctx.outcome_unknown:
                            unsettled = ctx.backend_pid
        except Exception as failure:
            if (unsettled is None and found is None) or isinstance(
                failure, TransactionAlreadyCommittedError | TransactionInDoubtError
            ):
                raise
            return await self._settle(transaction_id, operation, found, unsettled, resume, failure)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    async def _resume(
        self,
        transaction_id: uuid.UUID,
        operation: str,
        found: transaction_log.CommittedEntry,
        resume: ResumeFn[T] | None,
    ) -> T:
        """The result of an attempt that committed although its caller saw it fail."""
        if resume is None:
            raise TransactionAlreadyCommittedError(transaction_id, operation)
        result = await resume(found.steps)
        self.stats.resumed += 1
        return result

    async def _committed(
        self, transaction_id: uuid.UUID, operation: str, backend_pid: int
    ) -> transaction_log.CommittedEntry | None:
        """The committed row of ``transaction_id``, or None when no attempt committed.

        A missing row proves nothing while the backend that ran the attempt in doubt
        (``backend_pid``) is still inside a transaction: its COMMIT may still reach the
        server (a cut network; a terminated backend has ended by the time its client sees
        the loss). So the lookup is repeated, backing off, up to ``in_doubt_lookups`` times.

        Raises:
            TransactionInDoubtError: that backend stayed inside its transaction.
            The database's errors (the caller retries them).
        """
        policy = self.retry_policy
        for check in range(1, policy.in_doubt_lookups + 1):
            result = await transaction_log.lookup(self.pool, transaction_id, backend_pid)
            if result.committed is not None or not result.attempt_open:
                return result.committed
            if check < policy.in_doubt_lookups:
                await asyncio.sleep(policy.delay_s(check))
        self.stats.unresolved += 1
        log.warning("%s %s: the attempt in doubt is still open", operation, transaction_id)
        raise TransactionInDoubtError(transaction_id, operation)

    async def _settle(
        self,
        transaction_id: uuid.UUID,
        operation: str,
        found: transaction_log.CommittedEntry | None,
        backend_pid: int | None,
        resume: ResumeFn[T] | None,
        failure: Exception,
    ) -> T:
        """The last attempt failed while the outcome of a COMMIT was unknown (or while
        resuming one found committed): read ``transaction_log`` (up to
        ``in_doubt_lookups`` times, backing off, while the connection keeps failing) to
        answer with the real result.

        A COMMIT that completed is visible before its answer is sent, and ``_committed``
        waits until the attempt's backend has left its transaction, so a missing
        ``committed`` row means the attempt rolled back.

        Raises:
            ``failure``: nothing committed.
            TransactionInDoubtError (from ``failure``): the log (or, for a committed attempt,
                the result) stayed unreadable, or the attempt stayed open.
            TransactionAlreadyCommittedError: committed, and no ``resume`` was given.
        """
        policy = self.retry_policy
        lookups = AsyncRetrying(
            stop=stop_after_attempt(policy.in_doubt_lookups),
            wait=policy.wait_strategy(),
            retry=retry_if_exception(is_transaction_retryable),
            reraise=True,
        )
        try:
            async for lookup in lookups:
                with lookup:
                    if found is None and backend_pid is not None:
                        found = await self._committed(transaction_id, operation, backend_pid)
                    if found is not None:
                        return await self._resume(transaction_id, operation, found, resume)
        except TransactionInDoubtError as exc:
            raise exc from failure
        except Exception as exc:
            if not is_transaction_retryable(exc):
                raise
            self.stats.unresolved += 1
            log.warning(
                "%s %s: COMMIT outcome unknown after %d lookups (%s)",
                operation,
                transaction_id,
                policy.in_doubt_lookups,
                type(exc).__name__,
            )
            raise TransactionInDoubtError(transaction_id, operation) from failure
        raise failure

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
        except Exception as exc:
            # the connection is gone (any of ``is_connection_lost``): the server rolls the
            # transaction back itself, and the release below terminates the connection
            log.debug("rollback of %s failed: %s", operation, type(exc).__name__)

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
