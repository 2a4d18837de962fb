"""App factory: database, Bot, Dispatcher (routers, middlewares, FSM storage), services.

Running the process (polling or webhook mode, jobs, the notification sender, graceful
shutdown) is ``bot.lifecycle``'s, with the entry point ``run_bot``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import structlog
from aiogram import BaseMiddleware, Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.dispatcher.middlewares.user_context import UserContextMiddleware
from aiogram.enums import ParseMode
from aiogram.fsm.storage.base import BaseStorage
from aiogram.fsm.storage.memory import MemoryStorage
from aiogram.types import Update
from aiogram.types.update import UpdateTypeLookupError
from aiogram.utils.i18n import I18n

from bot.embedded_db import start_embedded
from bot.error_observers import ErrorObserver, ObservedErrorHandler, count_errors
from bot.features import require
from bot.metrics import Metrics
from bot.notification_texts import make_renderer
from bot.sentry import report_critical
from bot.services import Services, build_notification_manager
from bot.settings import Settings
from database import users
from database.migrate import (
    database_revision,
    ensure_schema_at_head,
    head_revision,
    upgrade_to_head,
)
from handlers import build_root_router
from handlers.admin.alerts import offer_markup
from handlers.command_menu import publish_defaults, publish_for_chat
from middlewares.callback_answer import AnswerEveryCallback
from middlewares.enhanced_error_handler import EnhancedErrorHandlerMiddleware
from middlewares.locale import UserLocaleMiddleware
from middlewares.user import UserMiddleware
from recovery.alerts import AdminAlerts, AlertPolicy
from recovery.audit import AdminAuditLog
from recovery.error_pipeline import ErrorPipeline
from recovery.error_stats import ErrorStatistics
from recovery.health import HealthMonitor, HealthThresholds
from recovery.inventory import InventoryReconciliationManager, ReconciliationPolicy
from recovery.locale import SUPPORTED_LOCALES
from recovery.notifications import Sender
from recovery.rate_limit import RateLimiter, TelegramRateLimiter
from recovery.redis_rate_limit import RedisRateLimiter
from recovery.retry import TransactionRetryPolicy
from recovery.state_manager import EnhancedStateManager
from recovery.user_cache import UserCache
from recovery.workflow_definitions import STAFF_ROLES
from recovery.workflows import WorkflowRecoveryManager

log = logging.getLogger(__name__)


async def resolve_database_url(settings: Settings) -> str:
    """The database to use, ready at the alembic head.

    ``DATABASE_URL`` unset: start the embedded PostgreSQL and migrate it. Set: check that
    the schema is at head (ops migrate; the bot never migrates a shared database).

    Raises:
        database.migrate.SchemaNotAtHeadError: the external database is not migrated.
    """
    if settings.database_url:
        await ensure_schema_at_head(settings.database_url)
        return settings.database_url
    url = await asyncio.to_thread(start_embedded, settings.data_dir)
    if await database_revision(url) != head_revision():  # alembic is imported only to migrate
        await asyncio.to_thread(upgrade_to_head, url)
    log.info("using the embedded PostgreSQL under %s", settings.data_dir)
    return url


def create_bot(settings: Settings) -> Bot:
    """The Bot, pointed at ``TELEGRAM_API_URL`` when set."""
    session = (
        AiohttpSession(api=TelegramAPIServer.from_base(settings.telegram_api_url))
        if settings.telegram_api_url
        else AiohttpSession()
    )
    return Bot(
        token=settings.require_bot_token(),
        session=session,
        default=DefaultBotProperties(parse_mode=ParseMode.HTML),
    )


def build_services(
    settings: Settings,
    pool: asyncpg.Pool,
    i18n: I18n,
    bot: Bot,
    metrics: Metrics | None = None,
    rate_limiter: RateLimiter | None = None,
) -> Services:
    """Create the recovery core objects for one process.

    With ``metrics``, recorded errors and notification deliveries are counted, and critical
    errors go to Sentry when it is initialised (``bot.sentry``). ``rate_limiter``: Telegram's
    limits for the notification sender (``create_rate_limiter``; default: this process's).
    """
    alerts = _build_alerts(settings, pool)
    error_handler = _build_error_handler(settings, pool, alerts, metrics)
    notifications = build_notification_manager(
        settings,
        pool,
        sender=_make_sender(settings, i18n, bot, metrics),
        renderer=make_renderer(i18n),
        error_handler=error_handler,
        alerts=alerts,
        rate_limiter=rate_limiter,
    )
    state_manager = _build_state_manager(settings, pool)
    return Services(
        settings=settings,
        pool=pool,
        i18n=i18n,
        error_handler=error_handler,
        state_manager=state_manager,
        workflow_recovery=WorkflowRecoveryManager(
            pool,
            default_threshold_s=settings.stuck_default_threshold_s,
            thresholds=settings.stuck_thresholds,
            transactions=state_manager.transactions,  # one path for every state change
        ),
        health_monitor=HealthMonitor(
            pool,
            thresholds=HealthThresholds.with_overrides(settings.health_thresholds),
            stuck_threshold_s=settings.stuck_default_threshold_s,
            stuck_thresholds=settings.stuck_thresholds,
            alerts=alerts,
            rate_limits=notifications.rate_limiter.status,
        ),
        notifications=notifications,
        alerts=alerts,
        audit=AdminAuditLog(pool),
        error_stats=ErrorStatistics(pool),
        inventory=InventoryReconciliationManager(
            pool,
            ReconciliationPolicy.of(
                settings.inventory_auto_fix_kinds, settings.inventory_orphan_grace_s
            ),
            error_handler=error_handler,
        ),
        metrics=metrics,
        user_cache=UserCache(pool, ttl_s=settings.user_cache_ttl_s),
    )


def _build_state_manager(settings: Settings, pool: asyncpg.Pool) -> EnhancedStateManager:
    """The state manager with the transaction retry policy of the ``DB_RETRY_*`` settings."""
    return EnhancedStateManager(
        pool,
        retry_policy=TransactionRetryPolicy(
            max_attempts=settings.db_retry_attempts,
            base_delay_s=settings.db_retry_base_delay_s,
            max_delay_s=settings.db_retry_max_delay_s,
        ),
    )


def _build_alerts(settings: Settings, pool: asyncpg.Pool) -> AdminAlerts:
    """The admin alerts with their dedupe window and rate (``ALERT_*`` settings)."""
    return AdminAlerts(
        pool,
        admin_ids=settings.admin_ids,
        policy=AlertPolicy(
            dedupe_window_s=settings.alert_dedupe_window_s,
            rate_limit=settings.alert_rate_limit,
            rate_window_s=settings.alert_rate_window_s,
        ),
    )


def _build_error_handler(
    settings: Settings, pool: asyncpg.Pool, alerts: AdminAlerts, metrics: Metrics | None
) -> ObservedErrorHandler:
    """The error handler over its batching pipeline (``ERROR_*`` settings); the bot token is
    masked as a secret; critical errors go to Sentry, and with ``metrics`` every error is
    counted."""
    secrets = tuple(s.get_secret_value() for s in (settings.bot_token,) if s)
    observers: list[ErrorObserver] = [report_critical]
    if metrics is not None:
        observers.append(count_errors(metrics))
    pipeline = ErrorPipeline(
        pool,
        window_s=settings.error_flush_window_s,
        max_groups=settings.error_spool_max_groups,
        backoff_max_s=settings.error_flush_backoff_max_s,
        extra_secrets=secrets,
        on_drop=metrics.observe_spool_drop if metrics is not None else None,
    )
    return ObservedErrorHandler(
        pool,
        admin_ids=settings.admin_ids,
        alert_window_s=settings.error_alert_window_s,
        extra_secrets=secrets,
        alerts=alerts,
        observers=observers,
        pipeline=pipeline,
    )


def _make_sender(settings: Settings, i18n: I18n, bot: Bot, metrics: Metrics | None) -> Sender:
    """The notification manager's sender: sends ``text`` to ``chat_id`` with the mute
    buttons of ``mute`` in ``locale`` (default ``DEFAULT_LOCALE``); returns the message id.
    With ``metrics``, counts each delivery as sent or failed (a failure is re-raised)."""

    async def send(
        chat_id: int, text: str, *, mute: Mapping[str, Any] | None = None, locale: str | None = None
    ) -> int | None:
        language = locale or settings.default_locale
        markup = (
            offer_markup(mute, lambda msgid: i18n.gettext(msgid, locale=language)) if mute else None
        )
        try:
            message = await bot.send_message(chat_id, text, reply_markup=markup)
        except Exception:
            if metrics is not None:
                metrics.notifications.labels("failed").inc()
            raise
        if metrics is not None:
            metrics.notifications.labels("sent").inc()
        return message.message_id

    return send


def create_rate_limiter(settings: Settings) -> TelegramRateLimiter | RedisRateLimiter:
    """Telegram's limits (``RATE_*``): with ``REDIS_URL`` in Redis, shared by every instance
    of the bot (keys under ``REDIS_KEY_PREFIX``, scoped by the bot's id); otherwise held by
    this process.

    The Redis client fails fast (``REDIS_TIMEOUT_S``, no retries): a failed call makes the
    limiter fall back to this process at 1/N of the rates (``recovery.redis_rate_limit``).
    """
    rates: dict[str, Any] = {
        "enabled": settings.rate_limit_enabled,
        "global_per_s": settings.rate_global_per_s,
        "per_chat_per_s": settings.rate_per_chat_per_s,
        "per_group_per_min": settings.rate_per_group_per_min,
        "window_margin_s": settings.rate_window_margin_s,
    }
    if not settings.redis_url:
        return TelegramRateLimiter(**rates)
    require("redis", "REDIS_URL is set")
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    client = Redis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
    bot_id = settings.require_bot_token().split(":", 1)[0]
    return RedisRateLimiter(client, scope=bot_id, key_prefix=settings.redis_key_prefix, **rates)


def create_storage(settings: Settings) -> BaseStorage:
    """FSM storage: Redis when ``REDIS_URL`` is set (conversations survive a restart and
    continue on any instance), process memory otherwise. Keys start with
    ``REDIS_KEY_PREFIX``."""
    if settings.redis_url:
        require("redis", "REDIS_URL is set")
        from aiogram.fsm.storage.redis import DefaultKeyBuilder, RedisStorage

        return RedisStorage.from_url(
            settings.redis_url, key_builder=DefaultKeyBuilder(prefix=settings.redis_key_prefix)
        )
    return MemoryStorage()


class ContextDispatcher(Dispatcher):
    """aiogram's ``Dispatcher`` that binds the update's identity to every log line of its
    handling (``bot.logs``): ``update_id``, ``update_type``, ``user_id``; an ``error_ref``
    or ``request_id`` set inside ends with the update."""

    async def feed_update(self, bot: Bot, update: Update, **kwargs: Any) -> Any:
        sender = UserContextMiddleware.resolve_event_context(update).user
        try:
            update_type = update.event_type
        except UpdateTypeLookupError:
            update_type = "unknown"
        with structlog.contextvars.bound_contextvars(
            update_id=update.update_id,
            update_type=update_type,
            user_id=sender.id if sender is not None else None,
            error_ref=None,
            request_id=None,
        ):
            return await super().feed_update(bot, update, **kwargs)


def build_dispatcher(
    services: Services,
    *,
    storage: BaseStorage | None = None,
    outer_middlewares: Sequence[BaseMiddleware] = (),
) -> Dispatcher:
    """Dispatcher with the middlewares in the design's order and every router.

    Outer update middlewares run in registration order: ``outer_middlewares`` first (the
    running process puts its update tracking there), then the error handler (it catches
    everything below it), then user loading; i18n wraps each event observer; every callback
    handler is wrapped by ``AnswerEveryCallback`` (one answer per callback). ``storage``
    is the FSM storage (memory when None).
    """
    dp = ContextDispatcher(storage=storage, **services.as_dispatcher_kwargs())
    for middleware in outer_middlewares:
        dp.update.outer_middleware(middleware)
    dp.update.outer_middleware(
        EnhancedErrorHandlerMiddleware(
            services.error_handler, services.i18n, services.settings.default_locale
        )
    )
    dp.update.outer_middleware(
        UserMiddleware(services.pool, services.settings, services.user_cache)
    )
    UserLocaleMiddleware(services.i18n).setup(dp)
    dp.callback_query.middleware(AnswerEveryCallback())  # wraps every callback handler
    dp.include_router(build_root_router())
    return dp


async def set_commands(bot: Bot, services: Services) -> None:
    """Publish the command menus (``handlers.command_menu``): everyone's commands per
    language; each admin's (``ADMIN_IDS`` and users with the admin role) and each reachable
    staff member's (their role's commands differ from everyone's) in their chat and
    language: one ``setMyCommands`` per such user. Optional: a server that rejects a list
    is only logged."""
    settings, i18n = services.settings, services.i18n
    await publish_defaults(bot, i18n, SUPPORTED_LOCALES, settings.default_locale)
    chats: dict[int, asyncpg.Record | None] = {}
    for role in (*STAFF_ROLES, "admin"):
        for found in await users.reachable_by_role(services.pool, role):
            chats[found["telegram_id"]] = found
    for telegram_id in settings.admin_ids:
        if telegram_id not in chats:
            chats[telegram_id] = await users.get_by_telegram_id(services.pool, telegram_id)
    for telegram_id, row in chats.items():
        if row is not None and row["blocked_bot_at"] is not None:
            continue
        language = row["language"] if row is not None else None
        is_admin = settings.is_admin_id(telegram_id) or (row is not None and row["role"] == "admin")
        await publish_for_chat(
            bot,
            i18n,
            telegram_id,
            role=row["role"] if row is not None else "admin",
            is_admin=is_admin,
            locale=language if language in SUPPORTED_LOCALES else settings.default_locale,
        )
