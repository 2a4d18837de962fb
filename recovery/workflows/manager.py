"""``WorkflowRecoveryManager``: the parts of workflow recovery put together."""

from __future__ import annotations

import asyncpg

from recovery.stuck import StuckPolicy
from recovery.transactions import TransactionalStateManager
from recovery.workflows.actions import RecoveryActions
from recovery.workflows.reading import RecoveryReading


class WorkflowRecoveryManager(RecoveryReading, RecoveryActions):
    """Stuck detection and admin recovery actions.

    Args:
        pool: asyncpg pool.
        default_threshold_s: seconds in a state before a request counts as stuck (24 h).
        thresholds: per ``"workflow_type:state"`` deadlines in seconds (settings
            ``STUCK_THRESHOLDS``).
        transactions: runs the recovery actions (retry policy, step hook); share the state
            manager's so that staff operations and recovery actions take one path. Default:
            one on ``pool`` with the default ``TransactionRetryPolicy``.

    Raises:
        ValueError: a threshold names a workflow type or state that does not exist, or is
            not positive.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        default_threshold_s: float = 24 * 3600.0,
        thresholds: dict[str, float] | None = None,
        transactions: TransactionalStateManager | None = None,
    ) -> None:
        self.pool = pool
        self.transactions = transactions or TransactionalStateManager(pool)
        self.stuck_policy = StuckPolicy.of(default_threshold_s, thresholds)
