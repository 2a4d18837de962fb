"""``EnhancedErrorHandlerMiddleware``: the outermost update middleware.

Error contract (as aiogram's own error middleware): the dispatcher's control-flow
exceptions (``SkipHandler``, ``CancelHandler``) pass through untouched; every other
exception is classified, recorded once per group in ``error_records`` (masked) and answered
with a short localized message carrying the error reference. It never raises to the
dispatcher, always answers a callback query, and survives the user having blocked the bot
while it replies.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.dispatcher.event.bases import CancelHandler, SkipHandler
from aiogram.exceptions import TelegramAPIError
from aiogram.types import CallbackQuery, Message, TelegramObject, Update
from aiogram.utils.i18n import I18n

from middlewares.error_messages import user_message
from middlewares.user import update_sender
from recovery.errors import ErrorHandler, classify
from recovery.masking import mask_sensitive

log = logging.getLogger(__name__)


class EnhancedErrorHandlerMiddleware(BaseMiddleware):
    """Catches everything raised below it (register it first on ``dp.update.outer_middleware``).

    Args:
        error_handler: records and escalates the error (``recovery.errors.ErrorHandler``).
        i18n: aiogram ``I18n`` used to render the reply in the user's language.
        default_locale: language when the user is unknown.
    """

    def __init__(self, error_handler: ErrorHandler, i18n: I18n, default_locale: str = "en") -> None:
        self.error_handler = error_handler
        self.i18n = i18n
        self.default_locale = default_locale

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        try:
            return await handler(event, data)
        except (SkipHandler, CancelHandler):
            raise
        except Exception as exc:
            await self._handle(exc, event, data)
            return None

    async def _handle(self, exc: Exception, event: TelegramObject, data: dict[str, Any]) -> None:
        verdict = classify(exc)
        update = event if isinstance(event, Update) else None
        sender = update_sender(update) if update is not None else None
        if verdict.ignore:
            log.debug("ignored %s: %s", type(exc).__name__, verdict.reason)
            await self._answer_callback(update, None)
            return
        context = {
            "update_id": update.update_id if update else None,
            "update_type": update.event_type if update else type(event).__name__,
            "telegram_user_id": sender.id if sender else None,
            "handler": getattr(data.get("handler"), "callback", None).__qualname__
            if getattr(data.get("handler"), "callback", None) is not None
            else None,
            "reason": verdict.reason,
        }
        record = await self.error_handler.handle(exc, context=context)
        log.warning(
            "update %s failed: %s/%s %s at %s (ref %s)",
            context["update_id"],
            record.category.value,
            record.severity.value,
            record.error_type.rsplit(".", 1)[-1],
            record.location,
            record.reference,
        )
        locale = data.get("locale") or self.default_locale
        text = user_message(self.i18n, exc, verdict, record.reference, locale)
        await self._reply(update, data.get("bot"), text)

    async def _reply(self, update: Update | None, bot: Bot | None, text: str) -> None:
        if update is None:
            return
        callback = update.callback_query
        if callback is not None:
            answered = await self._answer_callback(update, text)
            if answered:
                return
        message: Message | None = update.message or (
            callback.message
            if callback is not None and isinstance(callback.message, Message)
            else None
        )
        if message is None or bot is None:
            return
        try:
            await bot.send_message(message.chat.id, text)
        except TelegramAPIError as reply_exc:  # blocked the bot meanwhile, chat gone...
            await self.error_handler.handle(reply_exc, context={"while": "error_reply"})
        except Exception as reply_exc:  # network failure while replying: nothing more to do
            log.warning("error reply failed: %s", mask_sensitive(str(reply_exc)))

    async def _answer_callback(self, update: Update | None, text: str | None) -> bool:
        callback: CallbackQuery | None = update.callback_query if update else None
        if callback is None:
            return False
        try:
            await callback.answer(text=text[:200] if text else None, show_alert=bool(text))
            return True
        except TelegramAPIError as answer_exc:
            log.info("could not answer callback %s: %s", callback.id, answer_exc.message)
            return False
        except Exception as answer_exc:
            log.warning("could not answer callback: %s", mask_sensitive(str(answer_exc)))
            return False
