"""Every Bot API call tells the Telegram outage tracker whether Telegram answered.

A Bot API session middleware (aiogram's ``BaseRequestMiddleware``): a 5xx answer
(``TelegramServerError``, including "restarting") or a network error or timeout
(``TelegramNetworkError``, which aiogram raises for both) is a failure; any answer
Telegram gave, an error one included (400, 403, 429), shows that it is reachable.

Polling itself never stops on such errors: aiogram's ``Dispatcher._listen_updates`` catches
every exception of ``getUpdates``, logs it and waits with its own capped backoff (1 s growing
by 1.3 to 5 s, 10 % jitter) before the next call; the supervisor restarts polling if it ever
ends with an exception (``bot.me()`` at its start, for one).
"""

from __future__ import annotations

from typing import Any

from aiogram import Bot
from aiogram.client.session.middlewares.base import (
    BaseRequestMiddleware,
    NextRequestMiddlewareType,
)
from aiogram.exceptions import TelegramAPIError, TelegramNetworkError, TelegramServerError
from aiogram.methods import TelegramMethod
from aiogram.methods.base import Response

from recovery.outages import OutageTracker

UNREACHABLE = (TelegramServerError, TelegramNetworkError, TimeoutError)
"""Errors that say Telegram did not answer (5xx, network, timeout)."""


class TelegramOutageMiddleware(BaseRequestMiddleware):
    """Feeds ``tracker`` with the outcome of each Bot API call; changes nothing else."""

    def __init__(self, tracker: OutageTracker) -> None:
        self.tracker = tracker

    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[Any],
        bot: Bot,
        method: TelegramMethod[Any],
    ) -> Response[Any]:
        try:
            response = await make_request(bot, method)
        except UNREACHABLE:
            self.tracker.failure()
            raise
        except TelegramAPIError:
            self.tracker.success()  # an answer, if an unwelcome one
            raise
        self.tracker.success()
        return response


def watch_telegram(bot: Bot, tracker: OutageTracker) -> None:
    """Register the middleware on ``bot``'s session."""
    bot.session.middleware(TelegramOutageMiddleware(tracker))
