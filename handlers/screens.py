"""Showing a menu screen in response to a button: edit the message in place."""

from __future__ import annotations

from aiogram.exceptions import TelegramBadRequest
from aiogram.types import CallbackQuery, InlineKeyboardMarkup, Message


async def edit_or_send(
    query: CallbackQuery, text: str, markup: InlineKeyboardMarkup | None = None
) -> None:
    """Answer the callback query, then replace the menu message with ``text``.

    When the message cannot be edited (too old, inaccessible) a new message is sent; an
    unchanged screen ("message is not modified") is fine as it is.
    """
    await query.answer()
    message = query.message
    if isinstance(message, Message):
        try:
            await message.edit_text(text, reply_markup=markup)
            return
        except TelegramBadRequest as exc:
            if "message is not modified" in exc.message:
                return
        await message.answer(text, reply_markup=markup)
    elif query.from_user is not None and query.bot is not None:
        await query.bot.send_message(query.from_user.id, text, reply_markup=markup)
