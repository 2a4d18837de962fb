"""``EnhancedErrorHandlerMiddleware``: the outermost update middleware.

Error contract (as aiogram's own error middleware): the dispatcher's control-flow
exceptions (``SkipHandler``, ``CancelHandler``) pass through untouched; every other
exception is classified, recorded once per group in ``error_records`` (masked) and answered
with a short message in the user's language carrying the error reference. It never raises
to the dispatcher, always answers a callback query, and survives the user having blocked
the bot while it replies.

What the user sees (``middlewares.error_messages``): for a callback query, an alert on the
button (``answerCallbackQuery``; when the handler had answered it already, a message in the
chat instead); for a message, a reply in the chat. Harmless errors ("message is not
modified", "query is too old") get no reply, only a silent callback answer.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiogram import BaseMiddleware, Bot
from aiogram.client.default import Default
from aiogram.dispatcher.event.bases import CancelHandler, SkipHandler
from aiogram.exceptions import TelegramAPIError
from aiogram.methods import SendMessage
from aiogram.types import Chat, TelegramObject, Update, User
from aiogram.types.update import UpdateTypeLookupError
from aiogram.utils.i18n import I18n

from bot.i18n import pick_locale
from middlewares.error_messages import CALLBACK_ALERT_LIMIT, user_message
from recovery.errors import ErrorHandler, ErrorRecord, FailedSend
from recovery.masking import mask_sensitive

log = logging.getLogger(__name__)


def _parse_mode(method: SendMessage, bot: Bot | None) -> str | None:
    mode = method.parse_mode
    if isinstance(mode, Default):
        return bot.default[mode.name] if bot is not None else None
    return mode


def resendable_text(method: SendMessage, bot: Bot | None) -> str | None:
    """The text of a failed ``sendMessage`` as plain text, when the outbox can send it again
    unchanged: no keyboard, no entities, and either no parse mode or HTML without tags (the
    outbox escapes its parameters and sends in HTML). Else None."""
    if method.reply_markup is not None or method.entities:
        return None
    mode = _parse_mode(method, bot)
    if mode is None:
        return method.text
    if mode.upper() == "HTML" and "<" not in method.text:
        return html.unescape(method.text)
    return None


def failed_send_of(
    exc: BaseException, update: Update | None, data: dict[str, Any]
) -> FailedSend | None:
    """What the handler was sending when Telegram refused, read off aiogram's exception
    (``TelegramAPIError.method``); None when ``exc`` did not come from a call to a chat."""
    if not isinstance(exc, TelegramAPIError):
        return None
    chat_id = getattr(exc.method, "chat_id", None)
    if not isinstance(chat_id, int):
        return None
    text = None
    if isinstance(exc.method, SendMessage):
        text = resendable_text(exc.method, data.get("bot"))
    user = data.get("user")
    recipient_id = user["id"] if user is not None and user["telegram_id"] == chat_id else None
    key = f"resend:{update.update_id}:{chat_id}" if update is not None else None
    return FailedSend(chat_id=chat_id, text=text, recipient_id=recipient_id, idempotency_key=key)


def _update_type(update: Update | None, event: TelegramObject) -> str:
    """``message``, ``callback_query``...; ``unknown`` for a kind aiogram does not know."""
    if update is None:
        return type(event).__name__
    try:
        return update.event_type
    except UpdateTypeLookupError:
        return "unknown"


def _context(
    update: Update | None, event: TelegramObject, sender: User | None, chat: Chat | None = None
) -> dict[str, Any]:
    """What the error record keeps of the update; built from any update whatever its text
    (empty, blanks only, no-break spaces) or kind. ``sender`` and ``chat``: aiogram's
    ``event_from_user`` and ``event_chat``."""
    context: dict[str, Any] = {
        "update_id": update.update_id if update is not None else None,
        "update_type": _update_type(update, event),
        "telegram_user_id": sender.id if sender is not None else None,
        "chat_id": chat.id if chat is not None else None,
    }
    if update is not None and update.message is not None and update.message.text:
        words = update.message.text.split(maxsplit=1)
        if words and words[0].startswith("/"):
            context["command"] = words[0][:64]
    if update is not None and update.callback_query is not None:
        context["callback_data"] = (update.callback_query.data or "")[:64]
    return context


class EnhancedErrorHandlerMiddleware(BaseMiddleware):
    """Catches everything raised below it (register it first on ``dp.update.outer_middleware``).

    Args:
        error_handler: records and escalates the error (``recovery.errors.ErrorHandler``).
        i18n: aiogram ``I18n`` used to render the reply in the user's language.
        default_locale: language when neither the stored user nor Telegram gives one.
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
            try:
                await self._handle(exc, event, data)
            except Exception as fatal:  # the last line: never raise to the dispatcher
                log.error(
                    "error handling failed for %s: %s: %s",
                    type(exc).__name__,
                    type(fatal).__name__,
                    mask_sensitive(str(fatal), extra_secrets=self.error_handler.extra_secrets),
                )
            return None

    async def _handle(self, exc: Exception, event: TelegramObject, data: dict[str, Any]) -> None:
        update = event if isinstance(event, Update) else None
        # aiogram's UserContextMiddleware (an outer middleware of the Dispatcher) puts these
        sender: User | None = data.get("event_from_user")
        chat: Chat | None = data.get("event_chat")
        record = await self.error_handler.handle(
            exc,
            context=_context(update, event, sender, chat),
            failed_send=failed_send_of(exc, update, data),
        )
        if record.reference:  # every later line of this update carries what the user sees
            structlog.contextvars.bind_contextvars(error_ref=record.reference)
            log.info("error reference %s for this update", record.reference)
        if update is None:
            return
        bot: Bot | None = data.get("bot")
        verdict = record.classification
        assert verdict is not None
        if verdict.ignore:
            await self._answer_callback(update, None, bot)
            return
        locale = data.get("locale") or pick_locale(
            None, sender.language_code if sender is not None else None, self.default_locale
        )
        queued = "queued_resend" in record.actions
        if update.callback_query is not None:
            alert = user_message(self.i18n, verdict, reference=record.reference, locale=locale,
                                 queued_resend=queued, limit=CALLBACK_ALERT_LIMIT)  # fmt: skip
            if await self._answer_callback(update, alert, bot):
                return
        text = user_message(
            self.i18n, verdict, reference=record.reference, locale=locale, queued_resend=queued
        )
        await self._send(chat, text, bot, record)

    async def _send(
        self, chat: Chat | None, text: str, bot: Bot | None, record: ErrorRecord
    ) -> None:
        if chat is None or bot is None:
            return
        chat_id = chat.id
        try:
            await bot.send_message(chat_id, text, parse_mode=None)
        except Exception as reply_exc:  # blocked the bot meanwhile, chat gone, network...
            await self.error_handler.handle(
                reply_exc,
                context={"while": "error_reply", "reply_to": record.reference, "chat_id": chat_id},
                failed_send=FailedSend(chat_id=chat_id),
            )

    async def _answer_callback(self, update: Update, text: str | None, bot: Bot | None) -> bool:
        """Answer the update's callback query (with ``text`` as an alert); False when there
        is none or Telegram refused (e.g. the handler had answered it already)."""
        query = update.callback_query
        if query is None or bot is None:
            return False
        try:
            await bot.answer_callback_query(query.id, text=text, show_alert=bool(text))
            return True
        except TelegramAPIError as answer_exc:
            log.info("could not answer callback %s: %s", query.id, answer_exc.message)
            return False
        except Exception as answer_exc:
            log.warning(
                "could not answer callback %s: %s: %s",
                query.id,
                type(answer_exc).__name__,
                mask_sensitive(str(answer_exc)),
            )
            return False
