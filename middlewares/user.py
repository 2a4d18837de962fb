"""Loads (or registers) the ``users`` row of the update's sender."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiogram import BaseMiddleware
from aiogram.types import TelegramObject, Update, User

from bot.i18n import pick_locale
from bot.settings import Settings
from database import users


def update_sender(update: Update) -> User | None:
    """The Telegram user behind an update, for the update kinds the bot handles."""
    for event in (
        update.message,
        update.edited_message,
        update.callback_query,
        update.my_chat_member,
    ):
        if event is not None and event.from_user is not None:
            return event.from_user
    return None


class UserMiddleware(BaseMiddleware):
    """Outer update middleware: puts ``user``, ``is_admin`` and ``locale`` into the data.

    A first contact registers the user (role admin when listed in ``ADMIN_IDS``, else
    client; language from Telegram's ``language_code`` when supported). Writing to the bot
    again clears a "blocked the bot" mark.
    """

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self.pool = pool
        self.settings = settings

    async def __call__(
        self,
        handler: Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]],
        event: TelegramObject,
        data: dict[str, Any],
    ) -> Any:
        sender = update_sender(event) if isinstance(event, Update) else None
        if sender is not None and not sender.is_bot:
            user = await self._load(sender)
            data["user"] = user
            data["is_admin"] = user["role"] == "admin" or self.settings.is_admin_id(sender.id)
            data["locale"] = pick_locale(
                user["language"], sender.language_code, self.settings.default_locale
            )
        return await handler(event, data)

    async def _load(self, sender: User) -> asyncpg.Record:
        """One round trip (``users.load_or_register``)."""
        return await users.load_or_register(
            self.pool,
            telegram_id=sender.id,
            full_name=sender.full_name,
            username=sender.username,
            language=pick_locale(None, sender.language_code, self.settings.default_locale),
            role="admin" if self.settings.is_admin_id(sender.id) else "client",
        )
