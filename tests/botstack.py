"""The bot's real dispatcher (``bot.app.build_dispatcher``: every router and middleware) on a
real PostgreSQL pool and the Bot API session double, with builders of Telegram updates.

    stack = make_stack(pool, admin_ids=[ADMIN])
    await stack.feed(stack.message(42, "/start", first_name="Anna <3"))
    assert stack.session.texts_to(42)
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiogram import Bot, Dispatcher, Router
from aiogram.client.default import DefaultBotProperties
from aiogram.enums import ParseMode
from aiogram.types import Update

from bot.app import build_dispatcher, build_services
from bot.i18n import create_i18n
from bot.services import Services
from bot.settings import Settings
from tests.fakes.bot_session import FakeBotSession
from tests.fakes.telegram_api import DEFAULT_TOKEN, command_entities

BOT_ID = int(DEFAULT_TOKEN.split(":", 1)[0])
_ids = itertools.count(300_000_001)


def tg_user(
    user_id: int,
    *,
    first_name: str = "U",
    last_name: str | None = None,
    username: str | None = None,
    language: str | None = "en",
    is_bot: bool = False,
) -> dict[str, Any]:
    """A Telegram ``User`` object."""
    user: dict[str, Any] = {"id": user_id, "is_bot": is_bot, "first_name": first_name}
    if last_name is not None:
        user["last_name"] = last_name
    if username is not None:
        user["username"] = username
    if language is not None:
        user["language_code"] = language
    return user


def private_chat(user_id: int) -> dict[str, Any]:
    """The private chat of a user with the bot."""
    return {"id": user_id, "type": "private", "first_name": "U"}


@dataclass
class BotStack:
    """A dispatcher as the running bot builds it, fed updates directly."""

    dp: Dispatcher
    bot: Bot
    session: FakeBotSession
    pool: asyncpg.Pool
    services: Services
    updates: list[Update] = field(default_factory=list)

    def update(self, payload: dict[str, Any]) -> Update:
        """An ``Update`` from the fields of one event (``update_id`` is assigned)."""
        return Update.model_validate(
            {"update_id": next(_ids), **payload}, context={"bot": self.bot}
        )

    def message(
        self, user_id: int, text: str, *, sender: dict[str, Any] | None = None, **user: Any
    ) -> Update:
        """A private text message from ``user_id`` (entities as Telegram detects commands)."""
        n = next(_ids)
        content: dict[str, Any] = {"text": text}
        if entities := command_entities(text):
            content["entities"] = entities
        return self.update(
            {
                "message": {
                    "message_id": n,
                    "date": int(time.time()),
                    "chat": private_chat(user_id),
                    "from": sender or tg_user(user_id, **user),
                    **content,
                }
            }
        )

    def callback(
        self,
        user_id: int,
        data: str | None,
        *,
        sender: dict[str, Any] | None = None,
        message_text: str = "menu",
        **user: Any,
    ) -> Update:
        """A callback query pressed on a bot message in the user's private chat."""
        n = next(_ids)
        query: dict[str, Any] = {
            "id": str(n),
            "from": sender or tg_user(user_id, **user),
            "chat_instance": "1",
            "message": {
                "message_id": 1,
                "date": int(time.time()),
                "chat": private_chat(user_id),
                "from": tg_user(BOT_ID, first_name="Bot", is_bot=True),
                "text": message_text,
            },
        }
        if data is not None:
            query["data"] = data
        return self.update({"callback_query": query})

    async def feed(self, update: Update) -> Any:
        """Dispatch one update as polling would, then write what the error pipeline holds
        (as its flush task does within ``ERROR_FLUSH_WINDOW_S``), so the tables can be
        read."""
        self.updates.append(update)
        result = await self.dp.feed_update(self.bot, update)
        await self.services.error_handler.flush()
        return result


def _detach_routers() -> None:
    """The bot's routers are module-level (one per module, as aiogram intends) and a router
    belongs to one parent: let the next ``build_root_router`` take them again (a process
    runs one dispatcher; the tests build several)."""
    from handlers import admin, client, common, fallback, staff

    for module in (common, client, staff, admin, fallback):
        module.router._parent_router = None


def before_fallback(router: Router) -> None:
    """Include ``router`` in the bot's root router just before ``handlers.fallback``."""
    from handlers import fallback

    root = fallback.router.parent_router
    assert root is not None, "the fallback router is not included"
    root.include_router(router)
    root.sub_routers.remove(router)
    root.sub_routers.insert(root.sub_routers.index(fallback.router), router)


def make_stack(
    pool: asyncpg.Pool,
    *,
    admin_ids: Sequence[int] = (),
    extra_routers: Sequence[Router] = (),
    services_hook: Any = None,
) -> BotStack:
    """The real dispatcher on ``pool`` with a fresh session double; ``extra_routers`` (test
    handlers) are asked after the bot's own routers but before its last one, the fallback
    that answers everything nobody else took."""
    _detach_routers()
    settings = Settings(_env_file=None, bot_token=DEFAULT_TOKEN, admin_ids=list(admin_ids))
    session = FakeBotSession()
    bot = Bot(
        DEFAULT_TOKEN, session=session, default=DefaultBotProperties(parse_mode=ParseMode.HTML)
    )
    services = build_services(settings, pool, create_i18n("en"), bot)
    if services_hook is not None:
        services_hook(services)
    dp = build_dispatcher(services)
    for router in extra_routers:
        before_fallback(router)
    return BotStack(dp, bot, session, pool, services)
