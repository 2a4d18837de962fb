"""System health: live figures, an overall status from configurable thresholds, snapshots
every 5 minutes (``system_health_snapshots``) and an admin alert when the status changes.

Figures come from ``get_system_health_summary()`` (one query) plus the connection pool's use,
which only this process knows. Each figure with thresholds has a pair
``(degraded_at, critical_at)``: a value at or above ``critical_at`` makes the system critical,
at or above ``degraded_at`` degraded; the overall status is the worst figure's. The alert
goes out only when a snapshot's status differs from the previous snapshot's (worse or
better), never on every snapshot; the first snapshot compares with "healthy".
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import asyncpg

from database import dashboard
from database.pool import AnyConnection
from recovery.alerts import AdminAlerts, AlertKind, AlertResult

log = logging.getLogger(__name__)


def _(text: str) -> str:
    """Mark a msgid for extraction; translated where it is shown."""
    return text


class HealthStatus(StrEnum):
    """Overall status, ordered from best to worst."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 healthy, 1 degraded, 2 critical."""
        return list(HealthStatus).index(self)


Threshold = tuple[float | None, float | None]

DEFAULT_THRESHOLDS: dict[str, Threshold] = {
    "stuck_requests": (1, 50),
    "dead_notifications": (1, 50),
    "notification_backlog": (500, 5000),
    "oldest_due_notification_s": (300, 1800),
    "errors_high_last_hour": (1, 20),
    "errors_critical_last_hour": (None, 1),
    "open_discrepancies": (1, 100),
    "pool_usage": (0.8, 0.95),
    "job_failures_last_hour": (1, 3),
    "rate_limits_local_only": (1, None),
}
"""(degraded_at, critical_at) per figure; None disables a level. Overridden by the
``HEALTH_THRESHOLDS`` setting. Pool use is a ratio (in use / max size); the oldest due
notification is in seconds; error figures count error groups seen in the last hour.
``rate_limits_local_only`` is 1 while Redis is unreachable and this instance holds Telegram's
limits alone at 1/N of the rates (``recovery.redis_rate_limit``)."""

FIGURE_LABELS: dict[str, str] = {
    "active_requests": _("Active requests"),
    "stuck_requests": _("Stuck workflows"),
    "pending_notifications": _("Pending notifications"),
    "retrying_notifications": _("Retrying notifications"),
    "dead_notifications": _("Dead notifications"),
    "notification_backlog": _("Notification backlog"),
    "oldest_due_notification_s": _("Oldest due notification, seconds"),
    "errors_last_hour": _("Error groups in the last hour"),
    "errors_high_last_hour": _("High-severity errors in the last hour"),
    "errors_critical_last_hour": _("Critical errors in the last hour"),
    "open_discrepancies": _("Open inventory discrepancies"),
    "pool_usage": _("Database pool in use"),
    "job_failures_last_hour": _("Scheduler job failures in the last hour"),
    "rate_limits_local_only": _("Rate limits held by this instance alone (Redis unreachable)"),
}
"""msgids of every figure, in display order."""

STATUS_LABELS: dict[str, str] = {
    HealthStatus.HEALTHY: _("healthy"),
    HealthStatus.DEGRADED: _("degraded"),
    HealthStatus.CRITICAL: _("critical"),
}

HEALTH_ALERT_TEMPLATE = "admin.health_changed"


@dataclass(frozen=True, slots=True)
class HealthThresholds:
    """Thresholds per figure: ``DEFAULT_THRESHOLDS`` with overrides applied.

    Raises:
        ValueError: on construction, for an unknown figure or ``critical_at < degraded_at``.
    """

    levels: Mapping[str, Threshold] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))

    def __post_init__(self) -> None:
        for name, (degraded, critical) in self.levels.items():
            if name not in DEFAULT_THRESHOLDS:
                raise ValueError(f"unknown health figure {name!r}")
            if degraded is not None and critical is not None and critical < degraded:
                raise ValueError(f"health threshold {name}: critical_at is below degraded_at")

    @classmethod
    def with_overrides(cls, overrides: Mapping[str, Any] | None) -> HealthThresholds:
        """Defaults with ``{"figure": [degraded_at, critical_at]}`` overrides applied."""
        levels: dict[str, Threshold] = dict(DEFAULT_THRESHOLDS)
        for name, pair in (overrides or {}).items():
            degraded, critical = pair
            levels[name] = (degraded, critical)
        return cls(levels)

    def level_of(self, name: str, value: float) -> HealthStatus:
        """The status one figure alone implies."""
        degraded, critical = self.levels.get(name, (None, None))
        if critical is not None and value >= critical:
            return HealthStatus.CRITICAL
        if degraded is not None and value >= degraded:
            return HealthStatus.DEGRADED
        return HealthStatus.HEALTHY


@dataclass(frozen=True, slots=True)
class Reason:
    """A figure that made the status worse than healthy, and the threshold it reached."""

    figure: str
    value: float
    level: HealthStatus
    threshold: float


@dataclass(frozen=True, slots=True)
class HealthReport:
    """Figures (name -> number), the overall status and why."""

    status: HealthStatus
    figures: dict[str, float]
    reasons: tuple[Reason, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One stored snapshot."""

    id: int
    status: HealthStatus
    figures: dict[str, float]
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class SnapshotResult:
    """What ``take_snapshot`` stored, the status it compared with, and the alert it raised
    (None when the status did not change)."""

    snapshot_id: int
    report: HealthReport
    previous_status: HealthStatus
    alert: AlertResult | None


@dataclass(frozen=True, slots=True)
class HealthOverview:
    """The live report with the previous snapshot and the one about 24 h old (or the oldest
    when there is none that old) to compare with."""

    report: HealthReport
    previous: Snapshot | None
    baseline: Snapshot | None
    tasks_down: tuple[str, ...] = ()
    """This process's background tasks waiting for a restart (``Supervisor.down``)."""

    @staticmethod
    def delta(report: HealthReport, snapshot: Snapshot | None) -> dict[str, float]:
        """figure -> current minus the snapshot's value (figures the snapshot lacks are left
        out)."""
        if snapshot is None:
            return {}
        return {
            name: value - snapshot.figures[name]
            for name, value in report.figures.items()
            if name in snapshot.figures
        }


def figures_of(summary: Mapping[str, Any]) -> dict[str, float]:
    """Flat figures from a ``get_system_health_summary()`` document with ``pool`` merged in."""
    notifications = summary["notifications"]
    by_severity = summary.get("errors_last_hour_by_severity") or {}
    pool = summary.get("pool") or {}
    return {
        "active_requests": summary["active_requests"],
        "stuck_requests": summary["stuck_requests"],
        "pending_notifications": notifications["pending"],
        "retrying_notifications": notifications["retrying"],
        "dead_notifications": notifications["dead"],
        "notification_backlog": notifications["pending"] + notifications["retrying"],
        "oldest_due_notification_s": round(float(summary.get("oldest_due_notification_s", 0))),
        "errors_last_hour": sum((summary.get("errors_last_hour") or {}).values()),
        "errors_high_last_hour": by_severity.get("high", 0),
        "errors_critical_last_hour": by_severity.get("critical", 0),
        "open_discrepancies": summary.get("open_discrepancies", summary["negative_balances"]),
        "pool_usage": round(float(pool.get("usage", 0.0)), 3),
        "job_failures_last_hour": sum((summary.get("job_failures_last_hour") or {}).values()),
        "rate_limits_local_only": 1 if (summary.get("rate_limits") or {}).get("fallback") else 0,
    }


def evaluate(figures: Mapping[str, float], thresholds: HealthThresholds) -> HealthReport:
    """The overall status (worst figure) and the figures that reached a threshold."""
    reasons: list[Reason] = []
    for name, value in figures.items():
        level = thresholds.level_of(name, value)
        if level is not HealthStatus.HEALTHY:
            degraded, critical = thresholds.levels[name]
            threshold = critical if level is HealthStatus.CRITICAL else degraded
            assert threshold is not None
            reasons.append(Reason(name, value, level, threshold))
    status = max((r.level for r in reasons), key=lambda s: s.rank, default=HealthStatus.HEALTHY)
    reasons.sort(key=lambda r: -r.level.rank)
    return HealthReport(status, dict(figures), tuple(reasons))


def _snapshot(row: asyncpg.Record | None) -> Snapshot | None:
    if row is None:
        return None
    metrics = row["metrics"] or {}
    figures = metrics.get("figures") or (figures_of(metrics) if "notifications" in metrics else {})
    return Snapshot(row["id"], HealthStatus(row["status"]), figures, row["created_at"])


class HealthMonitor:
    """Reads live health figures, stores snapshots and alerts on status changes.

    Args:
        pool: asyncpg pool (its use is one of the figures).
        thresholds: status thresholds (default ``DEFAULT_THRESHOLDS``).
        stuck_threshold_s: default seconds in a state before a request counts as stuck.
        stuck_thresholds: per ``"workflow_type:state"`` thresholds in seconds.
        alerts: the admin alert path; None stores snapshots without alerting.
        rate_limits: where Telegram's limits are held (``RateLimiter.status``), which only
            this process knows; None: not shown.
        tasks_down: this process's background tasks waiting for a restart
            (``Supervisor.down``); None: not shown.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        thresholds: HealthThresholds | None = None,
        stuck_threshold_s: float = 24 * 3600.0,
        stuck_thresholds: Mapping[str, float] | None = None,
        alerts: AdminAlerts | None = None,
        rate_limits: Callable[[], Mapping[str, object]] | None = None,
        tasks_down: Callable[[], list[str]] | None = None,
    ) -> None:
        self.pool = pool
        self.tasks_down = tasks_down
        self.rate_limits = rate_limits
        self.thresholds = thresholds or HealthThresholds()
        self.stuck_threshold_s = stuck_threshold_s
        self.stuck_thresholds = dict(stuck_thresholds or {})
        self.alerts = alerts

    def pool_figures(self) -> dict[str, float]:
        """Connections of this process's pool: size, idle, in use, max and use ratio."""
        size, idle = self.pool.get_size(), self.pool.get_idle_size()
        maximum = self.pool.get_max_size()
        in_use = max(size - idle, 0)
        return {
            "size": size,
            "idle": idle,
            "in_use": in_use,
            "max": maximum,
            "usage": in_use / maximum if maximum else 0.0,
        }

    async def summary(self, conn: AnyConnection | None = None) -> dict[str, Any]:
        """``get_system_health_summary()`` as a dict, with ``pool`` (``pool_figures``) and
        ``rate_limits`` (where Telegram's limits are held, when known)."""
        pool = self.pool_figures()
        summary = await dashboard.health_summary(
            conn or self.pool, self.stuck_threshold_s, self.stuck_thresholds
        )
        local: dict[str, Any] = {"pool": pool}
        if self.rate_limits is not None:
            local["rate_limits"] = dict(self.rate_limits())
        if self.tasks_down is not None:
            local["tasks_down"] = list(self.tasks_down())
        return {**summary, **local}

    async def report(self) -> HealthReport:
        """The live figures and status."""
        return evaluate(figures_of(await self.summary()), self.thresholds)

    async def overview(self) -> HealthOverview:
        """The live report with the previous snapshot and the ~24 h old one."""
        report = await self.report()
        previous = _snapshot(await dashboard.latest_snapshot(self.pool))
        baseline = _snapshot(await dashboard.baseline_snapshot(self.pool, 24 * 3600.0))
        down = tuple(self.tasks_down()) if self.tasks_down is not None else ()
        return HealthOverview(report, previous, baseline, down)

    async def take_snapshot(self) -> SnapshotResult:
        """Store one snapshot (status, summary, figures, reasons) and, when the status
        differs from the previous snapshot's, raise one health alert in the same transaction.
        Snapshots are serialized by an advisory lock, so "previous" is well defined."""
        async with self.pool.acquire() as conn, conn.transaction():
            await dashboard.lock_snapshots(conn)
            summary = await self.summary(conn)
            report = evaluate(figures_of(summary), self.thresholds)
            previous = _snapshot(await dashboard.latest_snapshot(conn))
            previous_status = previous.status if previous else HealthStatus.HEALTHY
            metrics = {
                **summary,
                "figures": report.figures,
                "reasons": [
                    {"figure": r.figure, "value": r.value, "level": r.level.value}
                    for r in report.reasons
                ],
            }
            snapshot_id = await dashboard.insert_snapshot(conn, report.status.value, metrics)
            alert = None
            if report.status is not previous_status and self.alerts is not None:
                alert = await self._alert(conn, previous_status, report)
        return SnapshotResult(snapshot_id, report, previous_status, alert)

    async def _alert(
        self, conn: AnyConnection, previous: HealthStatus, report: HealthReport
    ) -> AlertResult:
        assert self.alerts is not None
        figures = report.figures
        transition = f"{previous.value}→{report.status.value}"
        log.warning("system health changed: %s", transition)
        return await self.alerts.raise_alert(
            AlertKind.HEALTH,
            f"health:{transition}",
            HEALTH_ALERT_TEMPLATE,
            {
                "previous": previous.value,
                "status": report.status.value,
                "stuck": int(figures["stuck_requests"]),
                "dead": int(figures["dead_notifications"]),
                "critical_errors": int(figures["errors_critical_last_hour"]),
                "discrepancies": int(figures["open_discrepancies"]),
                "backlog": int(figures["notification_backlog"]),
            },
            summary=transition,
            conn=conn,
        )
