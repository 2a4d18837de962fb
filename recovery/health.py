"""System health figures for the admin menu and the periodic snapshot job."""

from __future__ import annotations

from typing import Any

import asyncpg

from database import dashboard, recovery_log


class HealthMonitor:
    """Reads live health figures and writes ``system_health_snapshots``.

    Args:
        pool: asyncpg pool.
        stuck_threshold_s: default seconds in a state before a request counts as stuck.
    """

    def __init__(self, pool: asyncpg.Pool, *, stuck_threshold_s: float = 24 * 3600.0) -> None:
        self.pool = pool
        self.stuck_threshold_s = stuck_threshold_s

    async def summary(self) -> dict[str, Any]:
        """``get_system_health_summary()`` as a dict."""
        return await dashboard.health_summary(self.pool, self.stuck_threshold_s)

    @staticmethod
    def status_of(summary: dict[str, Any]) -> str:
        """healthy / degraded / critical from the summary figures."""
        errors = summary.get("errors_last_hour_by_severity", {})
        if errors.get("critical") or summary["notifications"]["dead"] > 100:
            return "critical"
        if summary["stuck_requests"] or summary["negative_balances"] or errors.get("high"):
            return "degraded"
        return "healthy"

    async def take_snapshot(self) -> tuple[str, dict[str, Any]]:
        """Store one snapshot; returns (status, figures)."""
        summary = await self.summary()
        status = self.status_of(summary)
        await self.pool.execute(
            "INSERT INTO system_health_snapshots (status, metrics) VALUES ($1, $2::jsonb)",
            status,
            summary,
        )
        return status, summary

    async def notification_counts(self) -> dict[str, int]:
        """Outbox rows by status."""
        return await dashboard.notification_counts(self.pool)

    async def error_counts(self, hours: int = 24) -> list[asyncpg.Record]:
        """Error groups by category and severity in the last ``hours``."""
        return await dashboard.error_counts(self.pool, hours)

    async def negative_balances(self, limit: int = 10) -> list[asyncpg.Record]:
        """Materials below zero."""
        return await dashboard.negative_balances(self.pool, limit)

    async def recent_recovery_actions(self, limit: int = 10) -> list[asyncpg.Record]:
        """The latest admin recovery actions."""
        return await recovery_log.recent(self.pool, limit=limit)
