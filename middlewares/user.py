"""Loads (or registers) the ``users`` row of the update's sender."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import asyncpg
from aiogram import BaseMiddleware
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.exceptions import TelegramAPIError
from aiogram.types import TelegramObject, Update, User
from aiogram.types.update import UpdateTypeLookupError

from database import users
from recovery.locale import pick_locale
from recovery.user_cache import UserCache

log = logging.getLogger(__name__)

# PostgreSQL text cannot hold NUL; a name is stored without it
_NUL = "\x00"


class UserPolicy(Protocol):
    """What the middleware needs of the settings (``bot.settings.Settings`` has it)."""

    @property
    def default_locale(self) -> str:
        """``DEFAULT_LOCALE``: the language of a user who has none the bot speaks."""
        ...

    def is_admin_id(self, telegram_id: int) -> bool:
        """True when ``telegram_id`` is listed in ``ADMIN_IDS``."""
        ...


# The update kinds the bot has handlers for; any other kind reaches no handler.
HANDLED_KINDS = frozenset({"message", "edited_message", "callback_query", "my_chat_member"})


def human_sender(update: Update, data: dict[str, Any]) -> User | None:
    """The person behind ``update``: aiogram's ``event_from_user`` (set by its
    ``UserContextMiddleware``) for a kind in ``HANDLED_KINDS`` sent by a human; else None."""
    sender: User | None = data.get("event_from_user")
    if sender is None or sender.is_bot:
        return None
    try:
        kind = update.event_type
    except UpdateTypeLookupError:
        return None
    return sender if kind in HANDLED_KINDS else None


class UserMiddleware(BaseMiddleware):
    """Outer update middleware: puts ``user``, ``is_admin`` and ``locale`` into the data.

    A first contact registers the user (role admin when listed in ``ADMIN_IDS``, else
    client; language from Telegram's ``language_code`` when supported). Writing to the bot
    again clears a "blocked the bot" mark.

    With a ``cache`` (``recovery.user_cache.UserCache``), the row of a client sender is
    served from this process's copy while PostgreSQL has not said it changed: no round trip
    for most updates. Staff and admin rows, and any row the cache cannot vouch for, are read
    from PostgreSQL as before.

    An update with no human sender (sent by a bot account, a channel post, an anonymous
    sender, a kind the bot does not know) reaches no handler: every handler acts for a
    user. Its callback query, if any, is answered silently, so that no button spins.
    """

    def __init__(
        self, pool: asyncpg.Pool, settings: UserPolicy, cache: UserCache | None = None
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.cache = cache

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        if not isinstance(event, Update):
            return await handler(event, data)
        sender = human_sender(event, data)
        if sender is None:
            await self._skip(event, data.get("event_from_user"))
            return UNHANDLED
        cache = self.cache
        user = cache.get(sender.id) if cache is not None else None
        if user is None:
            ticket = cache.ticket() if cache is not None else 0
            user = await self._load(sender)
            if cache is not None:
                cache.put(user, ticket)
        data["user"] = user
        data["is_admin"] = user["role"] == "admin" or self.settings.is_admin_id(sender.id)
        data["locale"] = pick_locale(
            user["language"], sender.language_code, self.settings.default_locale
        )
        return await handler(event, data)

    @staticmethod
    async def _skip(update: Update, sender: User | None) -> None:
        log.info(
            "update %s skipped: no human sender (%s)",
            update.update_id,
            "a bot" if sender is not None and sender.is_bot else "none, or a kind not handled",
        )
        query = update.callback_query
        if query is not None and query.bot is not None:
            try:
                await query.answer()
            except TelegramAPIError as exc:
                log.info("could not answer callback %s: %s", query.id, exc.message)

    async def _load(self, sender: User) -> asyncpg.Record:
        """One round trip (``users.load_or_register``)."""
        return await users.load_or_register(
            self.pool,
            telegram_id=sender.id,
            full_name=sender.full_name.replace(_NUL, ""),
            username=(sender.username or "").replace(_NUL, "") or None,
            language=pick_locale(None, sender.language_code, self.settings.default_locale),
            role="admin" if self.settings.is_admin_id(sender.id) else "client",
        )
