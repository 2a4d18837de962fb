"""Webhook mode: Telegram posts updates to ``WEBHOOK_URL``; this process serves them on
``WEB_HOST:WEB_PORT`` + ``WEBHOOK_PATH`` (aiogram's aiohttp integration).

Every instance behind the load balancer serves the same path, checks Telegram's secret
token header (``X-Telegram-Bot-Api-Secret-Token`` must equal ``WEBHOOK_SECRET``, else 401)
and answers 200 as soon as the update is accepted; the update is handled in the
background. A body that is not a Telegram Update (malformed JSON, JSON of another shape)
is answered 400 with one log line, and nothing is started for it. Once the instance is
shutting down it answers 503, so that Telegram delivers the update again (to another
instance) instead of losing it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.exceptions import TelegramRetryAfter
from aiogram.methods import TelegramMethod
from aiogram.types import Update
from aiogram.webhook.aiohttp_server import SimpleRequestHandler
from aiohttp import web
from pydantic import ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt

from bot.metrics import Metrics
from bot.settings import Settings

log = logging.getLogger(__name__)

# setWebhook may meet flood control when many instances start at once; wait as told
SET_WEBHOOK_ATTEMPTS = 3


class WebhookHandler(SimpleRequestHandler):
    """aiogram's ``SimpleRequestHandler`` that can stop accepting updates and counts
    requests in ``bot_webhook_requests_total{status}``.

    Args:
        dispatcher, bot, secret_token: as ``SimpleRequestHandler``.
        metrics: where requests are counted; None to count nothing.
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        bot: Bot,
        *,
        secret_token: str,
        metrics: Metrics | None = None,
        **data: Any,
    ) -> None:
        super().__init__(
            dispatcher, bot, handle_in_background=True, secret_token=secret_token, **data
        )
        self.metrics = metrics
        self.accepting = True

    async def _handle_request_background(self, bot: Bot, request: web.Request) -> web.Response:
        """Validate the body as an Update first: 400 (one log line, no task) when it is
        not one; else handle it in the background and answer 200 at once."""
        update = await self._read_update(bot, request)
        if update is None:
            return web.Response(status=400, text="not a Telegram Update")
        task = asyncio.create_task(self._feed(bot, update))
        self._background_feed_update_tasks.add(task)
        task.add_done_callback(self._background_feed_update_tasks.discard)
        return web.json_response({}, dumps=bot.session.json_dumps)

    @staticmethod
    async def _read_update(bot: Bot, request: web.Request) -> Update | None:
        try:
            payload = await request.json(loads=bot.session.json_loads)
            return Update.model_validate(payload, context={"bot": bot})
        except (ValueError, ValidationError) as exc:  # bad JSON, bad UTF-8, wrong shape
            log.warning(
                "webhook: refused a request whose body is not a Telegram Update (%s)",
                type(exc).__name__,
            )
            return None

    async def _feed(self, bot: Bot, update: Update) -> None:
        result = await self.dispatcher.feed_update(bot, update, **self.data)
        if isinstance(result, TelegramMethod):
            await self.dispatcher.silent_call_request(bot=bot, result=result)

    async def handle(self, request: web.Request) -> web.Response:
        """401 without the right secret token, 503 while shutting down, 400 for a body that
        is not an Update, else 200."""
        if not self.accepting:
            response = web.Response(status=503, text="shutting down", headers={"Retry-After": "1"})
        else:
            response = await super().handle(request)
        if self.metrics is not None:
            self.metrics.webhook_requests.labels(str(response.status)).inc()
        return response

    async def close(self) -> None:
        """The bot session is closed by the lifecycle, not by the web server."""


def add_webhook_route(app: web.Application, handler: WebhookHandler, path: str) -> None:
    """Serve ``POST path`` with ``handler``."""
    app.router.add_post(path, handler.handle)


async def set_webhook(bot: Bot, settings: Settings, allowed_updates: list[str]) -> None:
    """Tell Telegram where to post updates (``setWebhook``), with the secret token.

    Every instance may call it at start-up: the call is idempotent. Pending updates are
    kept. Flood control (429) is waited out up to ``SET_WEBHOOK_ATTEMPTS`` times.

    Raises:
        aiogram.exceptions.TelegramAPIError: Telegram refused the URL or the secret.
    """
    assert settings.webhook_url is not None and settings.webhook_secret is not None
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(SET_WEBHOOK_ATTEMPTS),
        wait=_wait_retry_after,
        retry=retry_if_exception_type(TelegramRetryAfter),
        before_sleep=_log_flood_wait,
        reraise=True,
    ):
        with attempt:
            await bot.set_webhook(
                url=settings.webhook_url,
                secret_token=settings.webhook_secret.get_secret_value(),
                allowed_updates=allowed_updates,
                max_connections=settings.webhook_max_connections,
                drop_pending_updates=False,
            )
    log.info("webhook set; Telegram posts updates to the configured WEBHOOK_URL")


def _wait_retry_after(state: RetryCallState) -> float:
    """Telegram's 429 is waited out for exactly its ``retry_after`` (no backoff)."""
    exc = state.outcome.exception() if state.outcome else None
    return float(exc.retry_after) if isinstance(exc, TelegramRetryAfter) else 0.0


def _log_flood_wait(state: RetryCallState) -> None:
    log.warning("setWebhook flood control: retrying in %s s", _wait_retry_after(state))
