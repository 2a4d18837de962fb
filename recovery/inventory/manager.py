"""``InventoryReconciliationManager``: the parts of inventory reconciliation put together."""

from __future__ import annotations

import asyncpg

from recovery.errors import ErrorHandler
from recovery.inventory.admin import ReconciliationAdmin
from recovery.inventory.model import (
    ReconciliationPolicy,
)
from recovery.inventory.runs import ReconciliationRuns


class InventoryReconciliationManager(ReconciliationRuns, ReconciliationAdmin):
    """Detects and fixes inventory discrepancies; the admin menu's inventory operations.

    Args:
        pool: asyncpg pool.
        policy: auto-fix kinds and orphan grace period.
        chunk_size: materials per detection query (progress is reported per chunk).
        error_handler: records a material whose fix failed (optional).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        policy: ReconciliationPolicy | None = None,
        *,
        chunk_size: int = 2000,
        error_handler: ErrorHandler | None = None,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.pool = pool
        self.policy = policy or ReconciliationPolicy()
        self.chunk_size = chunk_size
        self.error_handler = error_handler
