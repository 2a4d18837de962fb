"""The admin menu's one screen mechanism: show a screen in response to a button (edit the
menu message, else send), page a list (``Pager``, ``fetch_page``, ``list_markup``), and
say what the button's answer shows (``alert``).

Every callback query is answered once by ``middlewares.callback_answer.AnswerEveryCallback``
when its handler returns; a handler only says what the answer shows (``alert``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from aiogram.exceptions import TelegramBadRequest
from aiogram.filters.callback_data import CallbackData
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from aiogram.utils.callback_answer import CallbackAnswer

T = TypeVar("T")


def alert(callback_answer: CallbackAnswer, text: str) -> None:
    """Make the callback's answer an alert (a dialog the user closes) showing ``text``
    (plain text, at most 200 characters: Telegram's limit for ``answerCallbackQuery``)."""
    callback_answer.text = text
    callback_answer.show_alert = True


async def answer_now(
    query: CallbackQuery, callback_answer: CallbackAnswer, text: str | None = None
) -> None:
    """Answer the callback before long work (a batch, a check, a chart): Telegram refuses an
    answer given too late ("query is too old"). ``AnswerEveryCallback`` then sends none. A
    handler that fails after this gets the error message in the chat instead of an alert.
    (aiogram's ``pre`` flag would answer before the admin check of the admin routers.)"""
    callback_answer.disable()
    await query.answer(text)


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


@dataclass(frozen=True)
class Pager:
    """A page of a list: ``page`` (0-based, within range), ``pages`` (at least 1), ``size``
    (items per page)."""

    page: int
    pages: int
    size: int

    @classmethod
    def of(cls, total: int, requested: int, size: int) -> Pager:
        """The page for ``requested`` in a list of ``total`` items, clamped into range (a
        forged -3 shows the first page, a page past the end the last)."""
        pages = max((total + size - 1) // size, 1)
        return cls(page=min(max(requested, 0), pages - 1), pages=pages, size=size)

    @property
    def offset(self) -> int:
        """Items before this page (the SQL ``OFFSET``)."""
        return self.page * self.size

    def neighbours(self) -> list[tuple[str, int]]:
        """("‹", previous page) and ("›", next page), for those that exist."""
        row = []
        if self.page > 0:
            row.append(("‹", self.page - 1))
        if self.page + 1 < self.pages:
            row.append(("›", self.page + 1))
        return row

    def nav(self, make: Callable[[int], CallbackData]) -> list[InlineKeyboardButton]:
        """Buttons "‹" and "›" to the neighbouring pages that exist; ``make(page)`` is the
        callback data of a page."""
        return [
            InlineKeyboardButton(text=text, callback_data=make(page).pack())
            for text, page in self.neighbours()
        ]


async def fetch_page(
    fetch: Callable[[int, int], Awaitable[T]],
    total_of: Callable[[T], int],
    requested: int,
    size: int,
    max_page: int = 10**6,
) -> tuple[T, Pager]:
    """``fetch(limit, offset)`` for the ``requested`` page; when the list has shrunk below
    it, once more for its last page. Returns the result and its ``Pager``."""
    first = min(max(requested, 0), max_page)
    result = await fetch(size, first * size)
    pager = Pager.of(total_of(result), first, size)
    if pager.page != first:
        result = await fetch(size, pager.offset)
    return result, pager


def list_markup(
    items: Sequence[tuple[str, CallbackData]],
    pager: Pager,
    make_page: Callable[[int], CallbackData],
    back: tuple[str, CallbackData],
) -> InlineKeyboardMarkup:
    """A list screen's keyboard: one button per item, the page arrows, then "back"."""
    rows = [[InlineKeyboardButton(text=text, callback_data=data.pack())] for text, data in items]
    if nav := pager.nav(make_page):
        rows.append(nav)
    rows.append([InlineKeyboardButton(text=back[0], callback_data=back[1].pack())])
    return InlineKeyboardMarkup(inline_keyboard=rows)
