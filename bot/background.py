"""The process's supervised background work and its outage watch, wired from settings.

``Background`` holds the ``Supervisor`` (restart counts in
``bot_background_restarts_total{task}``, down tasks in ``/readyz`` and the health screen),
the outage trackers of PostgreSQL and Telegram (``bot_dependency_up``) and the
``OutageWatch`` that probes the database and raises one alert per outage (docs/outages.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiogram import Bot

from bot.metrics import Metrics
from bot.services import Services
from bot.settings import Settings
from bot.telegram_outage import watch_telegram
from recovery.outages import OutageTracker, OutageWatch, put_back_after_return
from recovery.supervisor import BackoffPolicy, Supervisor

log = logging.getLogger(__name__)

TASKS = ("polling", "error_pipeline", "notification_sender", "heartbeat", "outage_watch")
"""The long-lived tasks of a process (``polling`` only in polling mode)."""


def spooled_errors(services: Services) -> int:
    """Error occurrences held in memory so far because the database could not take them
    (the error pipeline's monotonic ``spooled_total``)."""
    return services.error_handler.pipeline.spooled_total


def _up_of(tracker: OutageTracker) -> Callable[[], float]:
    """The ``bot_dependency_up`` reading of ``tracker``: 0.0 during an outage, else 1.0."""
    return lambda: 0.0 if tracker.down else 1.0


@dataclass(slots=True)
class Background:
    """What ``build_background`` wires; the lifecycle starts the tasks on ``supervisor``."""

    supervisor: Supervisor
    database: OutageTracker
    telegram: OutageTracker
    watch: OutageWatch


def build_background(
    settings: Settings,
    services: Services,
    bot: Bot,
    metrics: Metrics | None,
    updates_taken: Callable[[], int],
) -> Background:
    """The supervisor, the trackers (the Telegram one fed by ``bot``'s session) and the
    watch. ``updates_taken`` is the update tracker's monotonic count (an outage's
    "updates affected" is its growth)."""
    on_restart = None
    if metrics is not None:
        metrics.add_tasks(TASKS)
        restarts = metrics.background_restarts
        on_restart = lambda name: restarts.labels(name).inc()  # noqa: E731
    supervisor = Supervisor(
        BackoffPolicy(
            base_delay_s=settings.background_restart_base_s,
            max_delay_s=max(settings.background_restart_max_s, settings.background_restart_base_s),
        ),
        on_restart=on_restart,
    )
    counters = {"updates": updates_taken, "errors_spooled": lambda: spooled_errors(services)}
    database = OutageTracker("database", settings.outage_alert_database_s, counters=counters)
    telegram = OutageTracker("telegram", settings.outage_alert_telegram_s, counters=counters)
    watch_telegram(bot, telegram)
    notifications = services.notifications

    async def on_back(dependency: str) -> None:
        if dependency == "database":  # what the error spool holds: written now
            await services.error_handler.flush()
        if dependency == "telegram":  # due meanwhile: send now rather than after the backoff
            count = await put_back_after_return(services.pool, telegram)
            if count is None:
                log.info("Telegram back again soon after the last return: backoff kept")
            elif count:
                log.info("Telegram answers: %d notification(s) held back due now", count)
        notifications.wake()

    watch = OutageWatch(
        services.pool, services.alerts, database, telegram,
        on_back=on_back, probe_interval_s=settings.outage_probe_interval_s,
        probe_timeout_s=settings.readiness_timeout_s,
    )  # fmt: skip
    if metrics is not None:
        for tracker in (database, telegram):
            metrics.dependency_up.labels(tracker.dependency).set_function(_up_of(tracker))
    services.health_monitor.tasks_down = supervisor.down
    return Background(supervisor, database, telegram, watch)
