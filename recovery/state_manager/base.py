"""The state every part of ``EnhancedStateManager`` shares, set by its ``__init__``."""

from __future__ import annotations

import asyncpg

from recovery.transactions import TransactionalStateManager


class ManagerBase:
    """Attributes of ``EnhancedStateManager`` its parts rely on."""

    pool: asyncpg.Pool
    transactions: TransactionalStateManager
