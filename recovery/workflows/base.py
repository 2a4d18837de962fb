"""The state every part of ``WorkflowRecoveryManager`` shares, set by its ``__init__``."""

from __future__ import annotations

import asyncpg

from recovery.stuck import StuckPolicy
from recovery.transactions import TransactionalStateManager


class ManagerBase:
    """Attributes of ``WorkflowRecoveryManager`` its parts rely on."""

    pool: asyncpg.Pool
    transactions: TransactionalStateManager
    stuck_policy: StuckPolicy
