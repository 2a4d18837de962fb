"""Telegram's command menu (the "/" list) in each user's language and for their role.

- Default scope, once per language code (``en``, ``ru``, ``uz``, and no code for any other
  language, in the default locale): the commands everyone may use.
- A chat scope (``BotCommandScopeChat``) for each staff member and admin, in their stored
  language: their role's commands; only admins get ``/workflow_recovery``. A chat scope wins
  over the default scope in that chat (Bot API, "Determining list of commands").

Published at start-up (default scopes, every admin and every reachable staff member) and
for one user when their language changes or their role is seen at ``/start`` and ``/help``
(roles change in the database; the bot has no command that changes a role). A server
refusing a list is logged and the bot goes on: the menu is a convenience. Command names
follow Telegram's rule (1-32 characters of ``a-z0-9_``), descriptions are 1-256 characters
(Bot API, ``BotCommand``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import BotCommand, BotCommandScopeChat, BotCommandScopeDefault
from aiogram.utils.i18n import I18n

log = logging.getLogger(__name__)


def _(text: str) -> str:
    """Mark a msgid for extraction; translated per language when published."""
    return text


DESCRIPTIONS: dict[str, str] = {
    "start": _("Start and see what I can do"),
    "new": _("Open a service request"),
    "my": _("My requests"),
    "tasks": _("Requests waiting for my role"),
    "use": _("Take materials for a request"),
    "workflow_recovery": _("Recovery menu for administrators"),
    "language": _("Change the language"),
    "help": _("Help"),
}
EVERYONE = ("start", "new", "my", "language", "help")
MATERIAL_ROLES = frozenset({"technician", "warehouse"})


def command_names(role: str | None, *, is_admin: bool) -> list[str]:
    """The commands of a user: everyone's, ``tasks`` for staff, ``use`` for technicians
    and the warehouse, ``workflow_recovery`` for admins."""
    names = ["start", "new", "my"]
    if role not in (None, "client", "admin"):
        names.append("tasks")
    if role in MATERIAL_ROLES:
        names.append("use")
    if is_admin:
        names.append("workflow_recovery")
    return [*names, "language", "help"]


def bot_commands(i18n: I18n, locale: str, names: Iterable[str]) -> list[BotCommand]:
    """``names`` as ``BotCommand`` with descriptions in ``locale``."""
    return [
        BotCommand(command=name, description=i18n.gettext(DESCRIPTIONS[name], locale=locale))
        for name in names
    ]


async def publish_defaults(bot: Bot, i18n: I18n, locales: Iterable[str], default: str) -> None:
    """Everyone's commands in each of ``locales`` (by language code) and, for any other
    language, in ``default``."""
    await _set(bot, bot_commands(i18n, default, EVERYONE), BotCommandScopeDefault(), None)
    for locale in locales:
        await _set(bot, bot_commands(i18n, locale, EVERYONE), BotCommandScopeDefault(), locale)


async def publish_for_chat(
    bot: Bot, i18n: I18n, chat_id: int, *, role: str | None, is_admin: bool, locale: str
) -> None:
    """The commands of one user's private chat, in their language."""
    names = command_names(role, is_admin=is_admin)
    await _set(bot, bot_commands(i18n, locale, names), BotCommandScopeChat(chat_id=chat_id), None)


async def _set(
    bot: Bot,
    commands: list[BotCommand],
    scope: BotCommandScopeDefault | BotCommandScopeChat,
    language_code: str | None,
) -> None:
    try:
        await bot.set_my_commands(commands, scope=scope, language_code=language_code)
    except TelegramAPIError as exc:
        log.warning(
            "setMyCommands refused for scope %s, language %s (%s); continuing",
            scope.type,
            language_code or "-",
            exc.message,
        )
