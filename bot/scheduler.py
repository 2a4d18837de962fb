"""APScheduler jobs that drive all periodic work against PostgreSQL, once per interval.

With several instances every instance schedules every job; each interval's run happens
once across all of them:

- each job fires on a grid aligned to the Unix epoch (``interval * n + phase``), so that
  every instance fires in the same slot and a firing never sits on a slot boundary;
- a firing first takes the job's PostgreSQL advisory lock (``database.locks``); a firing
  that finds it taken is skipped (``skipped_locked``). The lock is held by a database
  session, so an instance that dies mid-job frees it as soon as PostgreSQL sees the
  connection drop;
- under the lock, runs another instance left 'running' are marked 'abandoned' (holding the
  lock proves their instance is gone), then a ``job_runs`` row is inserted for the current
  slot (``floor(now / interval)`` on the database clock); the partial unique index
  ``ux_job_runs_slot`` refuses a second run in the same slot (``skipped_done``). An
  abandoned or cancelled run does not count, so another instance takes the slot over.

Every firing is counted in the metrics (``bot_job_runs_total{job, outcome}``), every run
is a ``job_runs`` row with its instance, times, outcome and result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bot.services import Services
from database import dashboard, job_runs, processed_updates, retention
from database.locks import try_advisory_lock
from recovery.connection_lost import is_connection_lost
from recovery.masking import mask_sensitive
from recovery.supervisor import Supervisor

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


async def cleanup(services: Services) -> dict[str, int]:
    """Apply the retention settings; returns the number of rows removed per table.

    The three cleanup functions of the schema (``ERROR_RETENTION_DAYS``,
    ``TRANSACTION_LOG_RETENTION_DAYS``, ``HEALTH_SNAPSHOT_RETENTION_DAYS``), then the
    operations tables (``JOB_RUN_RETENTION_DAYS``, ``PROCESSED_UPDATE_RETENTION_DAYS``), then
    the delivered and discarded notifications (``NOTIFICATION_RETENTION_DAYS``), then the
    dashboard's error rollup, admin alerts and ended mutes (``HEALTH_SNAPSHOT_RETENTION_DAYS``).
    Each count is logged by ``JobRunner``, stored in ``job_runs.result`` and added to
    ``bot_cleanup_removed_rows_total{table}``.
    """
    s = services.settings
    pool = services.pool
    removed = {
        "error_records": await retention.cleanup_error_records(pool, s.error_retention_days),
        "transaction_log": await retention.cleanup_transaction_logs(
            pool, s.transaction_log_retention_days
        ),
        "system_health_snapshots": await retention.cleanup_health_snapshots(
            pool, s.health_snapshot_retention_days
        ),
        "job_runs": await job_runs.delete_older_than(pool, s.job_run_retention_days),
        "processed_updates": await processed_updates.delete_older_than(
            pool, s.processed_update_retention_days
        ),
        "pending_notifications": await services.notifications.cleanup(
            s.notification_retention_days
        ),
        "dashboard": await dashboard.cleanup(pool, s.health_snapshot_retention_days),
    }
    if services.metrics is not None:
        for table, count in removed.items():
            services.metrics.cleanup_removed.labels(table).inc(count)
    return removed


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


def phase_s(interval_s: float) -> float:
    """Offset of a job's firings from its slot boundaries, in seconds: a quarter of the
    interval, at most one minute (clock skew between hosts stays far from a boundary)."""
    return min(interval_s / 4, 60.0)


class JobRunner:
    """Runs periodic jobs once per interval across every instance (see the module doc).

    Args:
        services: what the jobs work with (pool, settings, metrics, core objects).
        instance_id: this process's name in ``job_runs.instance_id``.
        supervisor: where an exception that escapes a job's bookkeeping is logged with its
            traceback and counted (``bot_background_restarts_total{task="job:<name>"}``);
            the next firing is the restart. A lost connection is only logged (the outage
            watch reports the outage once).
    """

    def __init__(
        self, services: Services, instance_id: str, supervisor: Supervisor | None = None
    ) -> None:
        self.services = services
        self.instance_id = instance_id
        self.supervisor = supervisor
        self.stopping = False
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def running(self) -> int:
        """Number of job runs in progress in this process."""
        return len(self._tasks)

    async def run(self, name: str, func: JobFunc, interval_s: float) -> object | None:
        """Fire job ``name``: run it when this instance gets the current slot.

        Returns the job's result, or None when skipped, failed or cancelled. Errors are
        recorded through the ErrorHandler, never raised.
        """
        if self.stopping:
            return None
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            with structlog.contextvars.bound_contextvars(job=name):
                return await self._run(name, func, interval_s)
        except asyncio.CancelledError:
            if self.stopping:  # our own shutdown cancelled it; the run is marked cancelled
                return None
            raise
        except Exception as exc:  # bookkeeping failed (database down): record, carry on
            if self.supervisor is not None and not is_connection_lost(exc):
                self.supervisor.record_failure(f"job:{name}", exc)
            else:  # the database is away: the outage is reported once, not per firing
                log.warning("job %s could not run: %s", name, type(exc).__name__)
            with contextlib.suppress(Exception):  # the error path itself may be down too
                await self.services.error_handler.handle(exc, context={"job": name})
            return None
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _run(self, name: str, func: JobFunc, interval_s: float) -> object | None:
        pool = self.services.pool
        async with try_advisory_lock(pool, f"job:{name}") as acquired:
            if not acquired:
                log.debug("job %s skipped: another instance is running it", name)
                self._observe(name, "skipped_locked")
                return None
            for orphan in await job_runs.abandon_orphans(pool, name):
                log.warning(
                    "job %s: run %s of %s (slot %s) abandoned, its instance stopped",
                    name, orphan["id"], orphan["instance_id"], orphan["slot_start"],
                )  # fmt: skip
            run = await job_runs.begin(pool, name, interval_s, self.instance_id)
            if run is None:
                log.debug("job %s skipped: this interval's run already happened", name)
                self._observe(name, "skipped_done")
                return None
            started = time.monotonic()
            try:
                result = await func(self.services)
            except asyncio.CancelledError:
                await job_runs.finish(pool, run["id"], "cancelled", error="shutdown")
                self._observe(name, "cancelled", time.monotonic() - started)
                log.info("job %s cancelled by shutdown; the slot may run again", name)
                raise
            except Exception as exc:
                error = mask_sensitive(f"{type(exc).__name__}: {exc}")[:500]
                await job_runs.finish(pool, run["id"], "failed", error=error)
                self._observe(name, "failed", time.monotonic() - started)
                await self.services.error_handler.handle(exc, context={"job": name})
                log.warning("job %s failed: %s", name, type(exc).__name__)
                return None
            duration = time.monotonic() - started
            await job_runs.finish(pool, run["id"], "ok", result=result)
            self._observe(name, "ok", duration)
            log.info("job %s done in %.3f s: %s", name, duration, result)
            return result

    def _observe(self, name: str, outcome: str, duration_s: float | None = None) -> None:
        if self.services.metrics is not None:
            self.services.metrics.observe_job(name, outcome, duration_s)

    async def stop(self, grace_s: float) -> int:
        """Take no new runs, wait up to ``grace_s`` seconds for the running ones, cancel the
        rest (their ``job_runs`` rows become 'cancelled'). Returns how many were cancelled."""
        self.stopping = True
        tasks = set(self._tasks)
        if not tasks:
            return 0
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        return len(pending)


async def run_job(services: Services, name: str, func: JobFunc) -> object | None:
    """Fire one job once (its interval from ``job_table``) as an instance named after
    ``INSTANCE_ID``; see ``JobRunner.run``."""
    interval_s = job_table(services)[name][1]
    runner = JobRunner(services, services.settings.instance_id or "manual")
    return await runner.run(name, func, interval_s)


def build_scheduler(services: Services, runner: JobRunner | None = None) -> AsyncIOScheduler:
    """An AsyncIOScheduler with every periodic job of the design on its epoch-aligned grid.

    A firing that comes late (a busy event loop) is still made within half an interval;
    firings missed in a row are coalesced into one.
    """
    runner = runner or JobRunner(services, services.settings.instance_id or "manual")
    scheduler = AsyncIOScheduler(timezone="UTC")
    now = time.time()
    for name, (func, interval_s) in job_table(services).items():
        start = math.floor(now / interval_s) * interval_s + phase_s(interval_s)
        scheduler.add_job(
            runner.run,
            IntervalTrigger(
                seconds=interval_s, start_date=datetime.fromtimestamp(start, UTC), timezone=UTC
            ),
            args=(name, func, interval_s),
            id=name,
            name=name,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, int(interval_s // 2)),
        )
    return scheduler
