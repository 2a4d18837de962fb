"""One bot process from start-up to graceful shutdown (``python -m bot``).

Start-up: database (embedded or external at head), pool, services, dispatcher (update
tracking, FSM storage from ``REDIS_URL``), then the run mode: long polling (default) or
webhook (``WEBHOOK_URL``: the web server, then ``setWebhook``). Every instance also runs
the periodic jobs (``bot.scheduler``: once per interval across instances) and the
notification sender (outbox claims with ``FOR UPDATE SKIP LOCKED`` and a lease, so
instances never send the same row at once). The web server, in webhook mode or with
``HTTP_IN_POLLING``, serves ``/metrics``, ``/healthz`` and ``/readyz``.

Shutdown on SIGTERM or SIGINT, within ``SHUTDOWN_GRACE_S`` seconds in total:

1. stop taking updates: readiness turns 503, the webhook answers 503 (Telegram delivers
   the update again, to another instance), polling stops;
2. at the same time, let the updates in flight finish, let the sender finish its batch
   and let running jobs finish; take no new batch and start no new job;
3. at the deadline, cancel what is left: a cancelled job's run becomes 'cancelled' (the
   slot may run again elsewhere) and every outbox row this instance still holds in
   'sending' is released back to due (``release_claims``), so nothing waits for a lease;
4. close the web server, the FSM storage, the pool (advisory locks go with it) and the
   Bot session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

import asyncpg
from aiogram import Bot, Dispatcher
from aiogram.fsm.storage.base import BaseStorage
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.app import (
    build_dispatcher,
    build_services,
    create_bot,
    create_rate_limiter,
    create_storage,
    resolve_database_url,
    set_commands,
)
from bot.background import Background, build_background
from bot.i18n import create_i18n
from bot.metrics import Metrics, Readiness, ops_routes, refresh_shared_gauges
from bot.scheduler import JobRunner, build_scheduler, job_table
from bot.sentry import close_sentry, init_sentry
from bot.services import Services
from bot.settings import Settings
from bot.telegram_start import check_token, poll
from bot.webhook import WebhookHandler, add_webhook_route, set_webhook
from database import instances
from database.migrate import head_revision
from database.pool import create_pool
from middlewares.updates import UpdateTrackingMiddleware
from recovery.notifications import default_instance_id
from recovery.rate_limit import TelegramRateLimiter
from recovery.redis_rate_limit import RedisRateLimiter
from recovery.update_claims import UpdateClaims

log = logging.getLogger(__name__)

CLAIM_UPDATES_IN = frozenset({"webhook"})
"""Modes in which each update id is claimed in ``processed_updates``: only a webhook can
get one update twice (Telegram redelivers an unanswered POST, maybe to another instance);
``getUpdates`` hands each update to its single consumer once."""


class BotInstance:
    """One bot process; ``await BotInstance(settings).run()`` serves until a signal.

    ``INSTANCE_ID`` (default host:pid) names the process in leases, job runs, processed
    updates and the metrics.
    """

    def __init__(self, settings: Settings) -> None:
        instance_id = settings.instance_id or default_instance_id()
        self.settings = settings.model_copy(update={"instance_id": instance_id})
        self.instance_id = instance_id
        self.mode = "webhook" if settings.webhook_mode else "polling"
        self.bot: Bot | None = None
        self.pool: asyncpg.Pool | None = None
        self.services: Services | None = None
        self.metrics: Metrics | None = None
        self.storage: BaseStorage | None = None
        self.dp: Dispatcher | None = None
        self.tracker: UpdateTrackingMiddleware | None = None
        self.claims: UpdateClaims | None = None
        self.runner: JobRunner | None = None
        self.scheduler: AsyncIOScheduler | None = None
        self.readiness: Readiness | None = None
        self.webhook: WebhookHandler | None = None
        self.web_runner: web.AppRunner | None = None
        self.background: Background | None = None
        self.rate_limiter: TelegramRateLimiter | RedisRateLimiter | None = None
        self._stop_requested: asyncio.Event | None = None
        self._sender_stop: asyncio.Event | None = None

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT (or until polling fails), shut down."""
        self._stop_requested = asyncio.Event()
        self._sender_stop = asyncio.Event()
        init_sentry(self.settings)
        try:
            self._install_signal_handlers()
            await self._start()
            await self._serve()
        finally:
            await self.shutdown()

    def request_stop(self) -> None:
        """Begin the graceful shutdown (what SIGTERM does)."""
        assert self._stop_requested is not None
        if self._stop_requested.is_set():
            log.info("already stopping")
        self._stop_requested.set()

    # ------------------------------------------------------------------ start-up
    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):  # not on Windows
                loop.add_signal_handler(sig, self.request_stop)

    async def _start(self) -> None:
        s = self.settings
        self.bot = create_bot(s)
        await check_token(self.bot)  # a rejected token stops here, before anything starts
        url = await resolve_database_url(s)
        self.pool = await create_pool(
            url,
            min_size=s.db_pool_min_size,
            max_size=s.db_pool_max_size,
            command_timeout_s=s.db_command_timeout_s,
        )
        self.metrics = Metrics(self.instance_id, self.mode)
        self.rate_limiter = limiter = create_rate_limiter(s)
        self.metrics.rate_limit_fallback.set_function(
            lambda: 1.0 if limiter.status().get("fallback") else 0.0
        )
        await self._beat()  # the number of instances is known before the first send
        self.services = build_services(s, self.pool, create_i18n(s.default_locale), self.bot,
                                       self.metrics, limiter)  # fmt: skip
        self.metrics.add_jobs(job_table(self.services))
        if self.mode in CLAIM_UPDATES_IN:
            self.claims = UpdateClaims(self.pool, self.instance_id)
        claim = self.claims.claim if self.claims is not None else None
        self.tracker = UpdateTrackingMiddleware(self.metrics, claim=claim)
        self.storage = create_storage(s)
        self.dp = build_dispatcher(
            self.services, storage=self.storage, outer_middlewares=[self.tracker]
        )
        tracker = self.tracker
        self.background = background = build_background(
            s, self.services, self.bot, self.metrics, lambda: tracker.taken
        )
        supervisor = background.supervisor
        self.runner = JobRunner(self.services, self.instance_id, supervisor)
        self.readiness = Readiness(
            self.pool, head_revision(), s.readiness_timeout_s, self.metrics,
            rate_limits=limiter.status, tasks_down=supervisor.down,
        )  # fmt: skip
        await set_commands(self.bot, self.services)
        if self.mode == "webhook":
            assert s.webhook_secret is not None
            self.webhook = WebhookHandler(
                self.dp, self.bot, secret_token=s.webhook_secret.get_secret_value(),
                metrics=self.metrics,
            )  # fmt: skip
            await self._start_web_server()
            await self.dp.emit_startup(bot=self.bot, dispatcher=self.dp, **self.dp.workflow_data)
            if s.webhook_set_on_start:
                await set_webhook(self.bot, s, self.dp.resolve_used_update_types())
        else:
            if s.http_in_polling:
                await self._start_web_server()
            dp, bot = self.dp, self.bot
            supervisor.start("polling", lambda: poll(dp, bot))
        if s.scheduler_enabled:
            self.scheduler = build_scheduler(self.services, self.runner)
            self.scheduler.start()
            self.metrics.set_job_intervals(
                {name: interval for name, (_, interval) in job_table(self.services).items()}
            )
        supervisor.start("error_pipeline", self.services.error_handler.run)
        if (user_cache := self.services.user_cache) is not None:
            supervisor.start("user_cache", user_cache.run)
        supervisor.start("notification_sender", self._sender_loop)
        supervisor.start("heartbeat", self._heartbeat_loop)
        stop = self._sender_stop
        assert stop is not None
        supervisor.start("outage_watch", lambda: background.watch.run(stop))
        log.info("instance %s ready (%s mode)", self.instance_id, self.mode)

    async def _start_web_server(self) -> None:
        assert self.metrics is not None and self.readiness is not None
        app = web.Application()
        app.add_routes(ops_routes(self.metrics, self.readiness, self._refresh_gauges))
        if self.webhook is not None:
            add_webhook_route(app, self.webhook, self.settings.webhook_path)
        self.web_runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.web_runner.setup()
        site = web.TCPSite(self.web_runner, self.settings.web_host, self.settings.web_port)
        await site.start()
        log.info("web server on %s", ", ".join(str(a) for a in self.web_runner.addresses))

    async def _refresh_gauges(self) -> None:
        assert self.pool is not None and self.metrics is not None and self.services is not None
        recovery = self.services.workflow_recovery

        async def count_stuck() -> int:
            return (await recovery.find_stuck(limit=1)).total

        await refresh_shared_gauges(self.metrics, self.pool, count_stuck)

    async def _beat(self) -> None:
        """Say this instance is alive (``bot_instances``); the count of live instances goes
        to the metrics and to the rate limiter (its divisor while Redis is away), which
        also tries Redis again if it is falling back."""
        assert self.pool is not None
        s = self.settings
        count = await instances.beat(
            self.pool, self.instance_id, self.mode, stale_after_s=3 * s.instance_heartbeat_s
        )
        if self.metrics is not None:
            self.metrics.live_instances.set(count)
        if isinstance(self.rate_limiter, RedisRateLimiter):
            self.rate_limiter.set_live_instances(count)
            await self.rate_limiter.probe()  # an idle instance notices Redis back too

    async def _heartbeat_loop(self) -> None:
        """``_beat`` every ``INSTANCE_HEARTBEAT_S`` seconds until cancelled; a failed beat
        is logged and the next one tried on time (the last count stays in force)."""
        failing = False
        while True:
            await asyncio.sleep(self.settings.instance_heartbeat_s)
            try:
                await self._beat()
            except Exception as exc:
                if not failing:
                    log.warning("instance heartbeat failed: %s", type(exc).__name__)
                failing = True
                continue
            if failing:
                log.info("instance heartbeat recorded again")
            failing = False

    async def _sender_loop(self) -> None:
        """The notification sender (``NotificationRetryManager.run``) until shutdown: it
        takes no new batch once the stop event is set and finishes the batches in hand."""
        assert self.services is not None and self._sender_stop is not None
        await self.services.notifications.run(self._sender_stop)

    async def _serve(self) -> None:
        assert self._stop_requested is not None
        waiter = asyncio.create_task(self._stop_requested.wait())
        watched: set[asyncio.Task[Any]] = {waiter}
        polling = self._task("polling")
        if polling is not None:
            watched.add(polling)  # ends only when polling stops without an error
        try:
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()

    def _task(self, name: str) -> asyncio.Task[None] | None:
        return self.background.supervisor.task(name) if self.background is not None else None

    # ------------------------------------------------------------------ shutdown
    async def shutdown(self) -> None:
        """Stop taking updates, finish or release in-flight work, close everything.

        Safe to call after a partial start-up.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown_grace_s
        log.info("instance %s stopping: no new updates", self.instance_id)
        if self.background is not None:
            self.background.supervisor.stopping = True  # a crash now is not restarted
        if self.readiness is not None:
            self.readiness.draining = True
        if self.webhook is not None:
            self.webhook.accepting = False
        await self._stop_polling()
        if self._sender_stop is not None:
            self._sender_stop.set()
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.pause()

        def remaining() -> float:
            return max(0.0, deadline - loop.time())

        unfinished, cancelled_jobs, _ = await asyncio.gather(
            self._finish_updates(remaining()),
            self.runner.stop(remaining()) if self.runner is not None else _zero(),
            self._stop_sender(remaining()),
        )
        if self.scheduler is not None and self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        released = await self._release_claims()
        if self.services is not None:  # what the error pipeline holds, within bounded time
            await self.services.error_handler.stop(max(1.0, remaining()))
        await self._leave()
        if self.background is not None:
            await self.background.supervisor.stop_all()
        await self._close()
        log.info(
            "instance %s stopped: %d update(s) cut short, %d job run(s) cancelled, "
            "%d notification(s) released",
            self.instance_id, unfinished, cancelled_jobs, released,
        )  # fmt: skip

    async def _stop_polling(self) -> None:
        task = self._task("polling")
        if task is None or task.done() or self.dp is None:
            return
        try:
            await self.dp.stop_polling()
        except RuntimeError:  # not polling yet (still waiting for Telegram): nothing to finish
            task.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await task

    async def _finish_updates(self, timeout_s: float) -> int:
        """Wait for the updates in flight; cancel those still running after ``timeout_s``
        seconds. Returns how many were cut short."""
        if self.tracker is None or await self.tracker.wait_idle(timeout_s):
            return 0
        left = self.tracker.cancel_all()
        log.error("%d update(s) still running at the shutdown deadline were cancelled", left)
        await self.tracker.wait_idle(5.0)
        return left

    async def _stop_sender(self, timeout_s: float) -> None:
        if self.background is None:
            return
        if not await self.background.supervisor.stop("notification_sender", timeout_s):
            log.warning("notification sender still busy at the shutdown deadline: cancelled")

    async def _release_claims(self) -> int:
        if self.services is None:
            return 0
        try:
            return await self.services.notifications.release_claims()
        except Exception as exc:  # the rows then wait for their lease instead
            log.error("could not release claimed notifications: %s", type(exc).__name__)
            return 0

    async def _leave(self) -> None:
        """Stop the heartbeat and remove this instance's row: from their next heartbeat on,
        the others count one instance fewer."""
        if self.background is not None:
            await self.background.supervisor.stop("heartbeat", 0.0)
        if self.pool is None:
            return
        try:
            await instances.leave(self.pool, self.instance_id)
        except Exception as exc:  # the row goes stale after three heartbeats instead
            log.warning("could not remove the instance row: %s", type(exc).__name__)

    async def _close(self) -> None:
        if self.web_runner is not None:
            await self.web_runner.cleanup()
        if self.dp is not None and self.mode == "webhook" and self.bot is not None:
            with contextlib.suppress(Exception):
                await self.dp.emit_shutdown(
                    bot=self.bot, dispatcher=self.dp, **self.dp.workflow_data
                )
        if self.storage is not None:
            with contextlib.suppress(Exception):
                await self.storage.close()
        if isinstance(self.rate_limiter, RedisRateLimiter):
            with contextlib.suppress(Exception):
                await self.rate_limiter.close()
        if self.claims is not None:  # its held connection goes back before the pool closes
            await self.claims.close()
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), 5.0)
            except Exception as exc:  # connections broken by an outage: drop them
                log.warning("pool did not close cleanly (%s): terminated", type(exc).__name__)
                self.pool.terminate()
        if self.bot is not None:
            await self.bot.session.close()
        close_sentry()


async def _zero() -> int:
    return 0


async def run_bot(settings: Settings) -> None:
    """Run the bot (polling, or webhook when ``WEBHOOK_URL`` is set) until SIGINT/SIGTERM,
    then shut down gracefully."""
    await BotInstance(settings).run()
