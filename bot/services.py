"""The services the bot wires together once and hands to handlers and jobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
from aiogram.utils.i18n import I18n

from bot.metrics import Metrics
from bot.settings import Settings
from recovery.alerts import AdminAlerts
from recovery.audit import AdminAuditLog
from recovery.error_stats import ErrorStatistics
from recovery.errors import ErrorHandler
from recovery.health import HealthMonitor
from recovery.inventory import InventoryReconciliationManager
from recovery.notifications import NotificationRetryManager
from recovery.state_manager import EnhancedStateManager
from recovery.workflows import WorkflowRecoveryManager


@dataclass(slots=True)
class Services:
    """Long-lived objects shared by handlers (as dispatcher keywords) and scheduler jobs."""

    settings: Settings
    pool: asyncpg.Pool
    i18n: I18n
    error_handler: ErrorHandler
    state_manager: EnhancedStateManager
    workflow_recovery: WorkflowRecoveryManager
    health_monitor: HealthMonitor
    notifications: NotificationRetryManager
    alerts: AdminAlerts
    audit: AdminAuditLog
    error_stats: ErrorStatistics
    inventory: InventoryReconciliationManager
    metrics: Metrics | None = None

    def as_dispatcher_kwargs(self) -> dict[str, Any]:
        """What handlers may declare as typed parameters."""
        return {
            "settings": self.settings,
            "pool": self.pool,
            "error_handler": self.error_handler,
            "state_manager": self.state_manager,
            "workflow_recovery": self.workflow_recovery,
            "health_monitor": self.health_monitor,
            "notifications": self.notifications,
            "alerts": self.alerts,
            "audit": self.audit,
            "error_stats": self.error_stats,
            "inventory": self.inventory,
        }
