"""The state every part of ``InventoryReconciliationManager`` shares, set by its ``__init__``."""

from __future__ import annotations

import asyncpg

from recovery.errors import ErrorHandler
from recovery.inventory.model import ReconciliationPolicy


class ManagerBase:
    """Attributes of ``InventoryReconciliationManager`` its parts rely on."""

    pool: asyncpg.Pool
    policy: ReconciliationPolicy
    chunk_size: int
    error_handler: ErrorHandler | None
