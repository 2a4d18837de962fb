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
from recovery.notifications import (
    ErrorRecorder,
    NotificationRetryManager,
    Renderer,
    RetryPolicy,
    Sender,
)
from recovery.rate_limit import RateLimiter, TelegramRateLimiter
from recovery.state_manager import EnhancedStateManager
from recovery.user_cache import UserCache
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
    user_cache: UserCache | None = None
    """Rows of client senders (``recovery.user_cache``); ``run`` must be running for it
    to serve anything (``bot.lifecycle`` supervises it)."""

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
            "user_cache": self.user_cache,
        }


def build_notification_manager(
    settings: Settings,
    pool: asyncpg.Pool,
    *,
    sender: Sender,
    renderer: Renderer,
    error_handler: ErrorRecorder | None = None,
    alerts: AdminAlerts | None = None,
    rate_limiter: RateLimiter | None = None,
) -> NotificationRetryManager:
    """The manager configured from settings (``RETRY_*``, ``RETRY_QUEUE_MAX_SIZE``,
    ``NOTIFICATION_*``, ``ADMIN_IDS``) with ``rate_limiter``, by default this process's
    limiter configured from ``RATE_*``."""
    return NotificationRetryManager(
        pool,
        sender=sender,
        renderer=renderer,
        error_handler=error_handler,
        alerts=alerts,
        policy=RetryPolicy(
            max_attempts=settings.retry_max_attempts,
            base_delay_s=settings.retry_base_delay_s,
            max_delay_s=settings.retry_max_delay_s,
        ),
        rate_limiter=rate_limiter
        or TelegramRateLimiter(
            enabled=settings.rate_limit_enabled,
            global_per_s=settings.rate_global_per_s,
            per_chat_per_s=settings.rate_per_chat_per_s,
            per_group_per_min=settings.rate_per_group_per_min,
            window_margin_s=settings.rate_window_margin_s,
        ),
        lease_s=settings.notification_lease_s,
        batch_size=settings.notification_batch_size,
        concurrency=settings.notification_concurrency,
        send_timeout_s=min(settings.notification_send_timeout_s, settings.notification_lease_s / 2),
        queue_max_size=settings.retry_queue_max_size,
        admin_ids=settings.admin_ids,
        instance_id=settings.instance_id,
        default_locale=settings.default_locale,
        poll_interval_s=settings.notification_poll_interval_s,
    )
