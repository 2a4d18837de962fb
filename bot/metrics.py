"""Prometheus metrics of one bot process and the operations endpoints of its web server.

``GET /metrics`` (Prometheus text format), ``GET /healthz`` (liveness: the event loop
answers) and ``GET /readyz`` (readiness: not shutting down, the database answers within
``READINESS_TIMEOUT_S`` seconds and its schema is at the alembic head of this code).

Each process has its own registry; with several instances Prometheus scrapes each one and
sums the counters. Gauges read from the database (outbox rows by status, retry queue
depth, stuck workflows) describe shared state, so every instance reports the same value:
aggregate them with ``max``, not ``sum``. They are refreshed on each scrape.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

import asyncpg
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from database import dashboard
from database.readiness import schema_revision
from recovery.errors import ErrorCategory, ErrorSeverity

log = logging.getLogger(__name__)

UPDATE_OUTCOMES = ("handled", "unhandled", "duplicate", "failed")
"""``handled``: a handler ran (errors included: the error middleware answers them);
``unhandled``: no handler matched; ``duplicate``: the update id was taken before (a
redelivery); ``failed``: an exception escaped every middleware."""

NOTIFICATION_OUTCOMES = ("sent", "failed")
"""Per delivery attempt through the Bot API: ``sent`` or ``failed`` (any error; the outbox
row's next state, retrying/dead/skipped, is in ``bot_notification_rows``)."""

NOTIFICATION_STATUSES = ("pending", "sending", "sent", "retrying", "dead", "skipped", "discarded")
"""``pending_notifications.status`` values (migration 0001)."""

JOB_OUTCOMES = ("ok", "failed", "cancelled", "skipped_locked", "skipped_done")
"""``ok``/``failed``: this instance ran the job; ``cancelled``: shutdown interrupted it;
``skipped_locked``: another instance was running it; ``skipped_done``: the interval's run
already happened."""

# job runs last from milliseconds (a quiet outbox) to minutes (daily cleanup)
_JOB_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0)


class Metrics:
    """The process's Prometheus metrics on a registry of their own.

    Args:
        instance_id: this process's name (``INSTANCE_ID`` or host:pid), exported as a label
            of ``bot_instance_info``.
        mode: ``polling`` or ``webhook``.
    """

    def __init__(self, instance_id: str, mode: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.info = Gauge(
            "bot_instance_info", "Constant 1, labelled with the instance.", ["instance", "mode"],
            registry=r,
        )  # fmt: skip
        self.info.labels(instance_id, mode).set(1)
        self._update_metrics(r)
        self._error_metrics(r)
        self._outbox_metrics(r)
        self._job_metrics(r)
        self._health_metrics(r)

    def _update_metrics(self, r: CollectorRegistry) -> None:
        """Updates taken, their duration, webhook requests, updates in flight."""
        self.updates = Counter(
            "bot_updates", "Telegram updates taken by this instance, by outcome.",
            ["update_type", "outcome"], registry=r,
        )  # fmt: skip
        self.update_seconds = Histogram(
            "bot_update_duration_seconds", "Time to handle one update (middlewares included).",
            ["update_type"], registry=r,
        )  # fmt: skip
        self.webhook_requests = Counter(
            "bot_webhook_requests", "Webhook POSTs by HTTP status (401 bad secret, 503 draining).",
            ["status"], registry=r,
        )  # fmt: skip
        self.updates_in_flight = Gauge(
            "bot_updates_in_flight", "Updates being handled right now.", registry=r
        )

    def _error_metrics(self, r: CollectorRegistry) -> None:
        """Errors recorded (every category and severity from 0) and the error spool's drops."""
        self.error_spool_dropped = Counter(
            "bot_error_spool_dropped_groups",
            "Error groups dropped from the full error spool (ERROR_SPOOL_MAX_GROUPS).",
            registry=r,
        )  # fmt: skip
        self.error_spool_dropped_occurrences = Counter(
            "bot_error_spool_dropped_occurrences",
            "Occurrences of the error groups dropped from the full error spool.",
            registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "bot_errors", "Errors recorded by the ErrorHandler, by category and severity.",
            ["category", "severity"], registry=r,
        )  # fmt: skip
        for category in ErrorCategory:
            for severity in ErrorSeverity:
                self.errors.labels(category.value, severity.value)

    def _outbox_metrics(self, r: CollectorRegistry) -> None:
        """Notification deliveries (every outcome from 0), outbox rows, the retry queue and
        the stuck workflows (the last three shared state, read on each scrape)."""
        self.notifications = Counter(
            "bot_notifications", "Notification delivery attempts by this instance, by outcome.",
            ["outcome"], registry=r,
        )  # fmt: skip
        for outcome in NOTIFICATION_OUTCOMES:
            self.notifications.labels(outcome)
        self.notification_rows = Gauge(
            "bot_notification_rows", "Outbox rows by status (shared state: aggregate with max).",
            ["status"], registry=r,
        )  # fmt: skip
        self.retry_queue_depth = Gauge(
            "bot_notification_retry_queue_depth",
            "Notifications waiting for another attempt (status 'retrying'; shared state).",
            registry=r,
        )
        self.stuck_workflows = Gauge(
            "bot_stuck_workflows",
            "Active requests over their stuck threshold (shared state).",
            registry=r,
        )

    def _job_metrics(self, r: CollectorRegistry) -> None:
        """Job firings, durations, last successes, intervals, and the cleanup's removals."""
        self.job_runs = Counter(
            "bot_job_runs", "Periodic job firings on this instance, by outcome.",
            ["job", "outcome"], registry=r,
        )  # fmt: skip
        self.job_seconds = Histogram(
            "bot_job_duration_seconds", "Duration of the job runs this instance made.",
            ["job"], buckets=_JOB_BUCKETS, registry=r,
        )  # fmt: skip
        self.job_last_success = Gauge(
            "bot_job_last_success_timestamp_seconds",
            "Unix time this instance last finished the job successfully.",
            ["job"], registry=r,
        )  # fmt: skip
        self.job_interval = Gauge(
            "bot_job_interval_seconds",
            "How often the job runs (JOB_*_INTERVAL_S); set while the scheduler is on.",
            ["job"], registry=r,
        )  # fmt: skip
        self.cleanup_removed = Counter(
            "bot_cleanup_removed_rows", "Rows removed by the cleanup job, by table.",
            ["table"], registry=r,
        )  # fmt: skip

    def _health_metrics(self, r: CollectorRegistry) -> None:
        """The database, live instances, the rate-limit fallback, background restarts and
        the dependencies' outages."""
        self.database_up = Gauge(
            "bot_database_up", "1 when the last readiness check or scrape reached PostgreSQL.",
            registry=r,
        )  # fmt: skip
        self.live_instances = Gauge(
            "bot_live_instances",
            "Instances whose heartbeat is recent (bot_instances; shared state).",
            registry=r,
        )
        self.rate_limit_fallback = Gauge(
            "bot_rate_limit_fallback",
            "1 while Redis is unreachable and this instance holds Telegram's limits alone "
            "at 1/N of the rates; 0 otherwise.",
            registry=r,
        )
        self.background_restarts = Counter(
            "bot_background_restarts",
            "Crashes of a supervised background task (restarted with backoff) or a job's "
            "escaped exception, by task.",
            ["task"], registry=r,
        )  # fmt: skip
        self.dependency_up = Gauge(
            "bot_dependency_up", "0 while an outage of the dependency is in progress.",
            ["dependency"], registry=r,
        )  # fmt: skip

    def add_tasks(self, names: Iterable[str]) -> None:
        """Create the restart counters of these tasks, so that they start at 0."""
        for name in names:
            self.background_restarts.labels(name)

    def add_jobs(self, names: Iterable[str]) -> None:
        """Create the label sets of these jobs, so that their counters start at 0."""
        for name in names:
            for outcome in JOB_OUTCOMES:
                self.job_runs.labels(name, outcome)

    def set_job_intervals(self, intervals: Mapping[str, float]) -> None:
        """Export each scheduled job's interval in seconds (alerts compare the time since
        its last success with it)."""
        for name, interval_s in intervals.items():
            self.job_interval.labels(name).set(interval_s)

    def observe_spool_drop(self, occurrences: int) -> None:
        """Count one error group (of ``occurrences``) dropped from the full error spool."""
        self.error_spool_dropped.inc()
        self.error_spool_dropped_occurrences.inc(occurrences)

    def observe_error(self, category: str, severity: str) -> None:
        """Count one recorded error."""
        self.errors.labels(category, severity).inc()

    def observe_job(self, job: str, outcome: str, duration_s: float | None = None) -> None:
        """Count one job firing; ``duration_s`` (seconds) for runs this instance made."""
        self.job_runs.labels(job, outcome).inc()
        if duration_s is not None:
            self.job_seconds.labels(job).observe(duration_s)
        if outcome == "ok":
            self.job_last_success.labels(job).set(time.time())

    def set_notification_rows(self, counts: dict[str, int]) -> None:
        """Outbox rows by status, and the retry queue depth (the 'retrying' rows)."""
        for status in {*NOTIFICATION_STATUSES, *counts}:
            self.notification_rows.labels(status).set(counts.get(status, 0))
        self.retry_queue_depth.set(counts.get("retrying", 0))

    def render(self) -> bytes:
        """The registry in Prometheus text exposition format."""
        return generate_latest(self.registry)


GaugeRefresher = Callable[[], Awaitable[None]]
"""Reads shared figures from the database into the gauges (called on each scrape)."""


async def refresh_shared_gauges(
    metrics: Metrics, pool: asyncpg.Pool, count_stuck: Callable[[], Awaitable[int]]
) -> None:
    """Outbox rows by status, retry queue depth and stuck workflows from the database.

    ``count_stuck`` counts stuck workflows with the configured thresholds (the workflow
    recovery manager's ``find_stuck(limit=1).total``).
    """
    metrics.set_notification_rows(await dashboard.notification_counts(pool))
    metrics.stuck_workflows.set(await count_stuck())


@dataclass
class Readiness:
    """Readiness of this instance for traffic.

    Not ready while shutting down (``draining``), when PostgreSQL does not answer within
    ``timeout_s`` seconds, when the schema revision differs from ``head`` (the code's
    alembic head: ops have not migrated yet, or rolled the code back), or while a supervised
    background task is down (``tasks_down``).
    """

    pool: asyncpg.Pool
    head: str
    timeout_s: float = 2.0
    metrics: Metrics | None = None
    draining: bool = False
    last: dict[str, object] = field(default_factory=dict)
    rate_limits: Callable[[], dict[str, object]] | None = None
    """Where Telegram's limits are held (``RateLimiter.status``): shown, never a reason to be
    not ready (falling back to this process still sends, more slowly)."""
    tasks_down: Callable[[], list[str]] | None = None
    """Supervised background tasks waiting for their restart (``Supervisor.down``): any of
    them makes the instance not ready, named under ``tasks_down``."""

    async def check(self) -> tuple[bool, dict[str, object]]:
        """(ready, details) with ``details`` naming each check's result."""
        details: dict[str, object] = {"draining": self.draining, "head": self.head}
        if self.rate_limits is not None:
            details["rate_limits"] = self.rate_limits()
        down = self.tasks_down() if self.tasks_down is not None else []
        if down:
            details["tasks_down"] = down
        try:
            revision = await asyncio.wait_for(
                schema_revision(self.pool, self.timeout_s), self.timeout_s
            )
        except Exception as exc:  # any failure to reach the database means "not ready"
            details.update(database="unreachable", error=type(exc).__name__)
            self._database_up(False)
            return False, details
        self._database_up(True)
        details.update(database="ok", revision=revision)
        ready = not self.draining and revision == self.head and not down
        if revision != self.head:
            details["schema"] = "behind" if revision is None else "not at head"
        return ready, details

    def _database_up(self, up: bool) -> None:
        if self.metrics is not None:
            self.metrics.database_up.set(1 if up else 0)


def ops_routes(
    metrics: Metrics, readiness: Readiness, refresh: GaugeRefresher | None = None
) -> list[web.RouteDef]:
    """``/metrics``, ``/healthz`` and ``/readyz`` for an aiohttp application.

    ``refresh`` runs before each scrape, bounded by the readiness timeout; when it fails the
    gauges keep their last values and ``bot_database_up`` drops to 0.
    """

    async def metrics_view(request: web.Request) -> web.Response:
        if refresh is not None:
            try:
                await asyncio.wait_for(refresh(), readiness.timeout_s)
                metrics.database_up.set(1)
            except Exception as exc:  # stale gauges are better than a failed scrape
                metrics.database_up.set(0)
                log.warning("metrics refresh failed: %s", type(exc).__name__)
        body = metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def readyz(request: web.Request) -> web.Response:
        ready, details = await readiness.check()
        details["status"] = "ready" if ready else "not ready"
        return web.json_response(details, status=200 if ready else 503)

    return [
        web.get("/metrics", metrics_view),
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
    ]
