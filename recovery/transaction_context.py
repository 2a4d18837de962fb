"""What one transaction of ``TransactionalStateManager`` holds while it runs: its context
(steps, savepoints, the changes it records, the step hook), the statuses of its log row,
and the predicates that decide a retry and an unknown COMMIT outcome."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import asyncpg
import structlog
from tenacity import RetryCallState

from database.pool import AnyConnection
from recovery.actors import Actor
from recovery.classification import RetryStrategy, classify
from recovery.connection_lost import is_connection_lost

# the transaction machinery logs under one name, "recovery.transactions"
log = logging.getLogger("recovery.transactions")

StepHook = Callable[["TransactionContext", str], Awaitable[None]]
"""``hook(ctx, step_name)``, awaited at the start of every step, before COMMIT
(``before_commit``) and after COMMIT returned (``after_commit``). For tracing and for fault
injection in tests; an exception it raises is a failure of that step."""

BEFORE_COMMIT = "before_commit"
AFTER_COMMIT = "after_commit"

# Statuses of transaction_log rows (CHECK constraint of the table).
COMMITTED, ROLLED_BACK, RETRIED, FAILED = "committed", "rolled_back", "retried", "failed"


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


def jsonable(value: Any) -> Any:
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
        actor: who performs it, when known; ``actor_id``: its ``user_id``.
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
        actor: Actor | None = None,
        step_hook: StepHook | None = None,
    ) -> None:
        self.conn = conn
        self.transaction_id = transaction_id
        self.operation = operation
        self.attempt = attempt
        self.actor = actor
        self.actor_id = actor.user_id if actor is not None else None
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
                "id": jsonable(entity_id),
                "before": jsonable(before),
                "after": jsonable(after),
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


def recorded(steps: list[dict[str, Any]], entity: str) -> dict[str, Any] | None:
    """The first change of ``entity`` in a committed transaction's steps (``{"entity", "id",
    "before", "after"}``, as ``TransactionContext.record`` wrote it), or None."""
    for step in steps:
        for operation in step.get("operations", []):
            if operation["entity"] == entity:
                return cast(dict[str, Any], operation)
    return None


def log_retry(state: RetryCallState) -> None:
    """tenacity's ``before_sleep``: one log line per retried transaction."""
    outcome = state.outcome
    exc = outcome.exception() if outcome is not None else None
    log.info(
        "retrying transaction after %s (attempt %d)",
        type(exc).__name__ if exc else "?",
        state.attempt_number,
    )


async def rollback_quietly(tr: asyncpg.transaction.Transaction, operation: str) -> None:
    """ROLLBACK, never raising: on a lost connection the server rolls the transaction back
    itself, and the pool's release terminates the connection."""
    try:
        await tr.rollback()
    except Exception as exc:
        log.debug("rollback of %s failed: %s", operation, type(exc).__name__)
