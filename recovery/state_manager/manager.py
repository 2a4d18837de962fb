"""``EnhancedStateManager``: the workflow operations put together."""

from __future__ import annotations

import asyncpg

from recovery.retry import TransactionRetryPolicy
from recovery.state_manager.materials import MaterialUses
from recovery.state_manager.queries import RequestQueries
from recovery.state_manager.staff_steps import StaffSteps
from recovery.transaction_context import StepHook
from recovery.transactions import TransactionalStateManager


class EnhancedStateManager(StaffSteps, MaterialUses, RequestQueries):
    """Workflow operations on a pool; each method is one audited, retried transaction.

    Every operation takes ``within``: an open ``TransactionContext`` to run inside (as a
    savepoint, no retry of its own) instead of a transaction of its own.

    Args:
        pool: asyncpg pool.
        retry_policy: retry of transient failures (settings ``DB_RETRY_ATTEMPTS``,
            ``DB_RETRY_BASE_DELAY_S``, ``DB_RETRY_MAX_DELAY_S``).
        step_hook: see ``recovery.transactions.StepHook`` (tracing, fault injection).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        retry_policy: TransactionRetryPolicy | None = None,
        step_hook: StepHook | None = None,
    ) -> None:
        self.pool = pool
        self.transactions = TransactionalStateManager(
            pool, retry_policy=retry_policy, step_hook=step_hook
        )
