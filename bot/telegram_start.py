"""The bot's first calls to Telegram: is the token accepted, is Telegram there.

``getMe`` is the first call a bot makes (aiogram's polling makes it before ``getUpdates``
and caches the answer in ``Bot.me()``). Two answers matter at start-up:

- 401 Unauthorized (or 404 Not Found, Telegram's answer for a token of no bot): the token
  is wrong or revoked. Retrying cannot help, so the process stops with one line and exit
  code 2, like a missing or malformed ``BOT_TOKEN``;
- no answer, or a 5xx: Telegram (or the network to it) is down. The bot starts anyway, and
  polling waits for Telegram with a capped backoff, one WARNING line per attempt and no
  traceback (it is an outage, not a crash: ``docs/outages.md``).
"""

from __future__ import annotations

import logging

from aiogram import Bot, Dispatcher
from aiogram.exceptions import (
    TelegramNetworkError,
    TelegramNotFound,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from bot.settings import MissingSettingError

log = logging.getLogger(__name__)

UNREACHABLE = (TelegramNetworkError, TelegramServerError)
"""What Telegram being away looks like to aiogram: no answer (network errors, timeouts) or
a 5xx answer."""

WAIT_INITIAL_S = 1.0
WAIT_MAX_S = 5.0
"""getMe is tried again after 1 s, growing to at most 5 s plus up to 1 s of jitter: the same
range as aiogram's own polling backoff for ``getUpdates`` (1 s to 5 s)."""


class TokenRejectedError(MissingSettingError):
    """Telegram rejected ``BOT_TOKEN`` (401 Unauthorized or 404 Not Found on ``getMe``)."""


async def check_token(bot: Bot) -> bool:
    """Ask Telegram who the bot is (``getMe``, cached in ``bot.me()``).

    Returns:
        True when Telegram answered, False when it did not (network error, timeout, 5xx):
        the caller goes on, and ``wait_for_telegram`` tries again before polling.

    Raises:
        TokenRejectedError: Telegram answered 401 or 404: the token is wrong or revoked.
    """
    try:
        await bot.me()
    except (TelegramUnauthorizedError, TelegramNotFound) as exc:
        raise TokenRejectedError(
            f"BOT_TOKEN was rejected by Telegram ({type(exc).__name__}): check the token"
        ) from None
    except UNREACHABLE as exc:
        log.warning("Telegram did not answer getMe at start (%s): will keep trying", _why(exc))
        return False
    return True


async def wait_for_telegram(bot: Bot) -> None:
    """``getMe`` until Telegram answers (exponential backoff with jitter, 1 s to 5 s), so
    that polling starts on a known bot instead of failing its own first call.

    Raises:
        TokenRejectedError: Telegram answered 401 or 404.
    """

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        log.warning("Telegram unreachable (%s): trying again in %.1f s", _why(exc), wait)

    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(UNREACHABLE),
        wait=wait_exponential_jitter(initial=WAIT_INITIAL_S, max=WAIT_MAX_S, jitter=1.0),
        before_sleep=before_sleep,
        reraise=True,
    ):
        with attempt:
            try:
                await bot.me()
            except (TelegramUnauthorizedError, TelegramNotFound) as exc:
                raise TokenRejectedError(
                    f"BOT_TOKEN was rejected by Telegram ({type(exc).__name__}): check the token"
                ) from None


async def poll(dp: Dispatcher, bot: Bot) -> None:
    """Polling as the supervised ``polling`` task runs it: wait for Telegram (an outage at
    start is not a crash), then aiogram's polling, which backs off on its own from then on."""
    await wait_for_telegram(bot)
    await dp.start_polling(
        bot,
        allowed_updates=dp.resolve_used_update_types(),
        handle_signals=False,
        close_bot_session=False,
    )


def _why(exc: BaseException | None) -> str:
    """The exception's type only: its text may quote the request URL, which holds the token."""
    return type(exc).__name__ if exc is not None else "no answer"
