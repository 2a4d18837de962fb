"""Showing a menu screen in response to a button, and what the button's answer says.

Every callback query is answered once by ``middlewares.callback_answer.AnswerEveryCallback``
when its handler returns; a handler only says what the answer shows (``alert``).
"""

from __future__ import annotations

from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message
from aiogram.utils.callback_answer import CallbackAnswer


def alert(callback_answer: CallbackAnswer, text: str) -> None:
    """Make the callback's answer an alert (a dialog the user closes) showing ``text``
    (plain text, at most 200 characters: Telegram's limit for ``answerCallbackQuery``)."""
    callback_answer.text = text
    callback_answer.show_alert = True


async def edit_or_send(
    query: CallbackQuery, text: str, markup: InlineKeyboardMarkup | None = None
) -> None:
    """Replace the menu message with ``text``.

    When the message cannot be edited (too old, inaccessible) a new message is sent; an
    unchanged screen ("message is not modified") is fine as it is.
    """
    message = query.message
    if isinstance(message, Message):
        await replace(message, text, markup)
    elif query.from_user is not None and query.bot is not None:
        await query.bot.send_message(query.from_user.id, text, reply_markup=markup)


async def replace(message: Message, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    """Edit ``message`` to show ``text``; send ``text`` as a new message when Telegram
    refuses the edit (too old, deleted), except for "message is not modified"."""
    try:
        await message.edit_text(text, reply_markup=markup)
    except TelegramBadRequest as exc:
        if "message is not modified" not in exc.message:
            await message.answer(text, reply_markup=markup)
