"""/start, /help and /language for everyone."""

from __future__ import annotations

import asyncpg
from aiogram import F, Router
from aiogram.filters import Command, CommandStart
from aiogram.types import CallbackQuery, Message
from aiogram.utils.callback_answer import CallbackAnswer
from aiogram.utils.i18n import I18n
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder

from database import users
from handlers.callbacks import LanguageCb
from handlers.command_menu import publish_for_chat
from handlers.render import html, lines
from handlers.routing import gate_tree
from handlers.texts import role_label
from recovery.locale import SUPPORTED_LOCALES
from recovery.user_cache import UserCache

router = Router(name=__name__)

LANGUAGE_NAMES = {"en": "English", "ru": "Русский", "uz": "Oʻzbekcha"}


async def _publish_menu(
    message: Message, user: asyncpg.Record, is_admin: bool, i18n: I18n | None, locale: str
) -> None:
    """The user's command menu for their role (read now: roles change in the database)
    and language; only a private chat has one."""
    if i18n is None or message.bot is None or message.chat.type != "private":
        return
    await publish_for_chat(
        message.bot, i18n, message.chat.id, role=user["role"], is_admin=is_admin, locale=locale
    )


@router.message(CommandStart())
@router.message(Command("help"))
async def start(
    message: Message,
    user: asyncpg.Record,
    is_admin: bool,
    i18n: I18n | None = None,
    locale: str = "en",
) -> None:
    """/start and /help: greets the (now registered) user, lists what their role can do and
    sets their command menu."""
    commands = [_("/new - open a service request"), _("/my - your requests")]
    if user["role"] not in ("client", "admin"):
        commands.append(_("/tasks - requests waiting for your role"))
    if user["role"] in ("technician", "warehouse"):
        commands.append(_("/use - take materials from stock for a request"))
    if is_admin:
        commands.append(_("/workflow_recovery - recovery menu"))
    commands.append(_("/language - change the language"))
    greeting = html(
        _("Hello, {name}! You are registered as {role}."),
        name=message.from_user.full_name if message.from_user else "",
        role=role_label(user["role"]),
    )
    await message.answer(lines(greeting, "", commands))
    await _publish_menu(message, user, is_admin, i18n, locale)


@router.message(Command("language"))
async def choose_language(message: Message) -> None:
    """Offers the supported languages."""
    keyboard = InlineKeyboardBuilder()
    for code in SUPPORTED_LOCALES:
        keyboard.button(text=LANGUAGE_NAMES[code], callback_data=LanguageCb(code=code))
    await message.answer(_("Choose your language:"), reply_markup=keyboard.as_markup())


@router.callback_query(LanguageCb.filter(F.code.in_(SUPPORTED_LOCALES)))
async def set_language(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    callback_data: LanguageCb,
    user: asyncpg.Record,
    pool: asyncpg.Pool,
    i18n: I18n,
    is_admin: bool = False,
    user_cache: UserCache | None = None,
) -> None:
    """Stores the language, confirms in it and sets the command menu in it."""
    await users.set_language(pool, user["id"], callback_data.code)
    if user_cache is not None:  # the next update of this process reads the new language
        user_cache.forget(user["telegram_id"])
    if query.bot is not None and query.from_user is not None:
        await publish_for_chat(
            query.bot,
            i18n,
            query.from_user.id,
            role=user["role"],
            is_admin=is_admin,
            locale=callback_data.code,
        )
    with i18n.use_locale(callback_data.code):
        callback_answer.text = _("Language changed.")
        if query.message is not None:
            await query.message.answer(_("Language changed."))


# a message or callback query that no handler above could take skips this router at its root
gate_tree(router)
