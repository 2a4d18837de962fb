"""APScheduler jobs that drive all periodic work against PostgreSQL.

Each run holds a PostgreSQL advisory lock named after the job, so with several instances
each interval's run happens once; a run that finds the lock taken is skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.services import Services
from database.locks import try_advisory_lock

log = logging.getLogger(__name__)

JobFunc = Callable[[Services], Awaitable[object]]


async def retry_notifications(services: Services) -> object:
    """Deliver due notifications and retries (bounded number of batches per run)."""
    return (await services.notifications.drain(max_batches=20)).as_dict()


async def reconcile_inventory(services: Services) -> object:
    """Inventory reconciliation: fix the kinds of ``INVENTORY_AUTO_FIX_KINDS``, leave the
    others open for an admin; returns the run's summary."""
    report = await services.inventory.auto_fix()
    return report.summary()


async def detect_stuck(services: Services) -> object:
    """Alert the admins once per newly stuck request, in one digest per admin (through the
    admin alert path)."""
    alerts = await services.workflow_recovery.alert_new_stuck(
        services.settings.admin_ids, alerts=services.alerts
    )
    return {
        "newly_stuck": len(alerts.new_request_ids),
        "digests": alerts.digests,
        "forgotten": alerts.forgotten,
    }


async def health_snapshot(services: Services) -> object:
    """Store a health snapshot; alert the admins when the status changed since the last."""
    result = await services.health_monitor.take_snapshot()
    return {
        "status": result.report.status.value,
        "previous": result.previous_status.value,
        "alert": result.alert.outcome.value if result.alert else None,
    }


async def alert_digest(services: Services) -> object:
    """Send the admin alerts held back by the rate limit as one digest per admin."""
    return {"digested": await services.alerts.flush_digest()}


async def cleanup(services: Services) -> object:
    """Remove old error records, transaction logs and health snapshots (retention from
    settings); returns the number of rows each function removed."""
    settings = services.settings
    pool = services.pool
    return {
        "error_records": await pool.fetchval(
            "SELECT cleanup_old_error_records($1)", settings.error_retention_days
        ),
        "transaction_log": await pool.fetchval(
            "SELECT cleanup_old_transaction_logs($1)", settings.transaction_log_retention_days
        ),
        "health_snapshots": await pool.fetchval(
            "SELECT cleanup_old_health_snapshots($1)", settings.health_snapshot_retention_days
        ),
        "dashboard": await pool.fetchval(
            "SELECT cleanup_old_dashboard_data($1)", settings.health_snapshot_retention_days
        ),
        "notifications": await services.notifications.cleanup(settings.notification_retention_days),
    }


def job_table(services: Services) -> dict[str, tuple[JobFunc, float]]:
    """Job name -> (function, interval in seconds), from settings."""
    s = services.settings
    return {
        "retry_notifications": (retry_notifications, s.job_retry_interval_s),
        "reconcile_inventory": (reconcile_inventory, s.job_reconcile_interval_s),
        "detect_stuck": (detect_stuck, s.job_stuck_interval_s),
        "health_snapshot": (health_snapshot, s.job_health_interval_s),
        "alert_digest": (alert_digest, s.job_alert_digest_interval_s),
        "cleanup": (cleanup, s.job_cleanup_interval_s),
    }


async def run_job(services: Services, name: str, func: JobFunc) -> object | None:
    """Run one job under its advisory lock; returns its result, or None when another
    instance holds the lock. Errors are recorded through the ErrorHandler, never raised."""
    started = time.monotonic()
    try:
        async with try_advisory_lock(services.pool, f"job:{name}") as acquired:
            if not acquired:
                log.debug("job %s skipped: another instance runs it", name)
                return None
            result = await func(services)
            log.info("job %s done in %.3f s: %s", name, time.monotonic() - started, result)
            return result
    except Exception as exc:
        record = await services.error_handler.handle(exc, context={"job": name})
        log.warning("job %s failed: %s", name, type(exc).__name__)
        try:  # a health figure; the database may be what failed
            await services.health_monitor.record_job_failure(
                name,
                type(exc).__name__,
                reference=record.reference,
                instance_id=services.settings.instance_id,
            )
        except Exception as record_exc:
            log.warning("job %s failure not recorded: %s", name, type(record_exc).__name__)
        return None


def build_scheduler(services: Services) -> AsyncIOScheduler:
    """An AsyncIOScheduler with every periodic job of the design registered."""
    scheduler = AsyncIOScheduler(timezone="UTC")
    for name, (func, interval_s) in job_table(services).items():
        scheduler.add_job(
            run_job,
            "interval",
            seconds=interval_s,
            args=(services, name, func),
            id=name,
            name=name,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, int(interval_s // 2)),
        )
    return scheduler
