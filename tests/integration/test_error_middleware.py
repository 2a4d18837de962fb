"""``EnhancedErrorHandlerMiddleware`` in a real Dispatcher with the bot's middlewares, a
real PostgreSQL and a test double of the Bot API session: replies by category and severity
in the user's language with an error reference that exists, callback queries always
answered, a user who blocked the bot survived, failed sends queued, control flow passed on.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest_asyncio
from aiogram import Bot, Dispatcher, F, Router
from aiogram.dispatcher.event.bases import UNHANDLED, SkipHandler
from aiogram.types import CallbackQuery, Message, Update

from bot.app import build_services
from bot.i18n import create_i18n
from bot.settings import Settings
from middlewares.enhanced_error_handler import EnhancedErrorHandlerMiddleware
from middlewares.locale import UserLocaleMiddleware
from middlewares.user import UserMiddleware
from recovery.errors import ErrorHandler
from recovery.exceptions import (
    ConcurrentModificationError,
    InputValidationError,
    InsufficientStockError,
)
from tests.fakes.bot_session import FakeBotSession
from tests.fakes.telegram_api import (
    BAD_GATEWAY,
    BOT_BLOCKED,
    CHAT_NOT_FOUND,
    DEFAULT_TOKEN,
    NOT_MODIFIED,
)

REFERENCE = re.compile(r"E-[A-Z2-9]{6}")
_ids = itertools.count(100_000_001)

# What users see, per language, as the catalogs translate it.
TEXTS = {
    "business": {
        "en": "This request was changed by someone else a moment ago. Open it again and retry.",
        "ru": "Эту заявку только что изменил кто-то другой. Откройте её снова и повторите.",
        "uz": "Bu arizani hozirgina boshqa kishi oʻzgartirdi. Uni qayta oching va takrorlang.",
    },
    "data": {
        "en": "That input cannot be accepted. Please check it and try again.",
        "ru": "Эти данные нельзя принять. Проверьте их и попробуйте снова.",
        "uz": "Bu maʼlumotni qabul qilib boʻlmaydi. Tekshirib, qayta urinib koʻring.",
    },
    "inventory": {
        "en": "There is not enough of this material in stock.",
        "ru": "Этого материала недостаточно на складе.",
        "uz": "Omborda bu materialdan yetarli emas.",
    },
    "transient": {
        "en": "The service is temporarily unavailable. Please try again in a minute.",
        "ru": "Сервис временно недоступен. Попробуйте через минуту.",
        "uz": "Xizmat vaqtincha ishlamayapti. Bir daqiqadan soʻng urinib koʻring.",
    },
    "system_critical": {
        "en": "Something went wrong on our side. The team has been notified.",
        "ru": "У нас что-то пошло не так. Команда уже уведомлена.",
        "uz": "Bizda nimadir notoʻgʻri ketdi. Jamoa xabardor qilindi.",
    },
    "system_high": {
        "en": "Something went wrong on our side. Please try again later.",
        "ru": "У нас что-то пошло не так. Попробуйте позже.",
        "uz": "Bizda nimadir notoʻgʻri ketdi. Keyinroq qayta urinib koʻring.",
    },
    "notification": {
        "en": "We could not deliver our reply. Please send the command again.",
        "ru": "Не удалось доставить наш ответ. Отправьте команду ещё раз.",
        "uz": "Javobimizni yetkazib boʻlmadi. Buyruqni qayta yuboring.",
    },
    "queued": {
        "en": "We could not deliver a message. We will retry.",
        "ru": "Не удалось доставить сообщение. Мы повторим попытку.",
        "uz": "Xabarni yetkazib boʻlmadi. Qayta urinib koʻramiz.",
    },
}
REFERENCE_LABEL = {"en": "Error reference", "ru": "Код ошибки", "uz": "Xato kodi"}


@dataclass
class Harness:
    """A dispatcher as the bot builds it, with a test router, on a session double."""

    dp: Dispatcher
    bot: Bot
    session: FakeBotSession
    pool: asyncpg.Pool
    errors: ErrorHandler

    def message(self, user_id: int, text: str, language: str = "en") -> Update:
        n = next(_ids)
        return Update.model_validate(
            {
                "update_id": n,
                "message": {
                    "message_id": n,
                    "date": int(time.time()),
                    "chat": {"id": user_id, "type": "private", "first_name": "U"},
                    "from": _user(user_id, language),
                    "text": text,
                },
            },
            context={"bot": self.bot},
        )

    def callback(self, user_id: int, data: str, language: str = "en") -> Update:
        n = next(_ids)
        return Update.model_validate(
            {
                "update_id": n,
                "callback_query": {
                    "id": str(n),
                    "from": _user(user_id, language),
                    "chat_instance": "1",
                    "data": data,
                    "message": {
                        "message_id": 1,
                        "date": int(time.time()),
                        "chat": {"id": user_id, "type": "private", "first_name": "U"},
                        "from": {"id": 123456789, "is_bot": True, "first_name": "Bot"},
                        "text": "menu",
                    },
                },
            },
            context={"bot": self.bot},
        )

    async def feed(self, update: Update) -> Any:
        """Feed ``update``, then write what the error pipeline holds (as its flush task
        does within ``ERROR_FLUSH_WINDOW_S``), so the tables can be read."""
        result = await self.dp.feed_update(self.bot, update)
        assert await self.errors.flush()
        return result


def _user(user_id: int, language: str) -> dict[str, Any]:
    return {"id": user_id, "is_bot": False, "first_name": "U", "language_code": language}


async def _missing_table(pool: asyncpg.Pool) -> None:
    await pool.fetch("SELECT * FROM no_such_table")


FAILURES: dict[str, Callable[[Message, asyncpg.Pool], Any]] = {}


def failure(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        FAILURES[name] = func
        return func

    return register


@failure("business")
async def _business(message: Message, pool: asyncpg.Pool) -> None:
    raise ConcurrentModificationError("request", 7, expected_version=2)


@failure("data")
async def _data(message: Message, pool: asyncpg.Pool) -> None:
    raise InputValidationError("description", "longer than 1000")


@failure("inventory")
async def _inventory(message: Message, pool: asyncpg.Pool) -> None:
    raise InsufficientStockError(3, requested=5, available=1)


@failure("transient")
async def _transient(message: Message, pool: asyncpg.Pool) -> None:
    raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")


@failure("system_critical")
async def _system_critical(message: Message, pool: asyncpg.Pool) -> None:
    await _missing_table(pool)


@failure("system_high")
async def _system_high(message: Message, pool: asyncpg.Pool) -> None:
    raise KeyError("unexpected")


@failure("notification")
async def _notification(message: Message, pool: asyncpg.Pool) -> None:
    await message.answer("Your requests: none")  # the double refuses it: chat not found


@failure("queued")
async def _queued(message: Message, pool: asyncpg.Pool) -> None:
    await message.answer("Your requests: none & more")  # the double answers 502


def _router() -> Router:
    router = Router(name="failing")

    @router.message(F.text.startswith("/fail "))
    async def fail(message: Message, pool: asyncpg.Pool) -> None:
        await FAILURES[(message.text or "").split()[1]](message, pool)

    @router.message(F.text == "/skip")
    async def skip(message: Message) -> None:
        raise SkipHandler

    @router.callback_query(F.data == "raise_before_answer")
    async def raise_before_answer(query: CallbackQuery) -> None:
        raise ConcurrentModificationError("request", 7, expected_version=2)

    @router.callback_query(F.data == "raise_after_answer")
    async def raise_after_answer(query: CallbackQuery) -> None:
        await query.answer("working...")
        raise InputValidationError("quantity", "must be positive")

    @router.callback_query(F.data == "edit_unchanged")
    async def edit_unchanged(query: CallbackQuery) -> None:
        assert isinstance(query.message, Message)
        await query.message.edit_text("menu")  # the double answers "message is not modified"

    @router.message(F.text == "/reply")
    async def reply(message: Message) -> None:
        await message.answer("Your requests: none")

    return router


@pytest_asyncio.fixture
async def harness(pool: asyncpg.Pool) -> AsyncIterator[Harness]:
    settings = Settings(_env_file=None, bot_token=DEFAULT_TOKEN, admin_ids=[555_000_001])
    session = FakeBotSession()
    bot = Bot(DEFAULT_TOKEN, session=session)
    i18n = create_i18n("en")
    services = build_services(settings, pool, i18n, bot)
    dp = Dispatcher(**services.as_dispatcher_kwargs())
    dp.update.outer_middleware(EnhancedErrorHandlerMiddleware(services.error_handler, i18n, "en"))
    dp.update.outer_middleware(UserMiddleware(pool, settings))
    UserLocaleMiddleware(i18n).setup(dp)
    dp.include_router(_router())
    yield Harness(dp, bot, session, pool, services.error_handler)


async def _group(pool: asyncpg.Pool, text: str) -> asyncpg.Record:
    match = REFERENCE.search(text)
    assert match, f"no error reference in {text!r}"
    row = await pool.fetchrow("SELECT * FROM error_records WHERE reference = $1", match.group())
    assert row is not None, f"{match.group()} is not in error_records"
    return row


async def test_each_category_is_answered_in_each_language_with_a_reference(
    harness: Harness,
) -> None:
    expected_category = {
        "business": "business_logic",
        "data": "data",
        "inventory": "inventory",
        "transient": "transient",
        "system_critical": "system",
        "system_high": "system",
        "notification": "notification",
        "queued": "transient",
    }
    for user_id, language in ((1001, "en"), (1002, "ru"), (1003, "uz")):
        for kind, category in expected_category.items():
            if kind == "notification":
                harness.session.fail_next("sendMessage", **CHAT_NOT_FOUND, chat_id=user_id)
            if kind == "queued":
                harness.session.fail_next("sendMessage", **BAD_GATEWAY, chat_id=user_id)
            before = len(harness.session.texts_to(user_id))
            assert await harness.feed(harness.message(user_id, f"/fail {kind}", language)) is None
            replies = harness.session.texts_to(user_id)[before:]
            assert len(replies) == 1, (kind, language, replies)
            text = replies[0]
            first_line, second_line = text.split("\n")
            assert first_line == TEXTS[kind][language], (kind, language)
            assert second_line.startswith(REFERENCE_LABEL[language])
            row = await _group(harness.pool, text)
            assert row["category"] == category, kind
            assert "Traceback" not in text and "Error:" not in text


async def test_a_transient_failure_of_the_reply_queues_it_in_the_outbox(
    harness: Harness,
) -> None:
    harness.session.fail_next("sendMessage", **BAD_GATEWAY, chat_id=1001)
    update = harness.message(1001, "/fail queued")
    await harness.feed(update)
    row = await harness.pool.fetchrow("SELECT * FROM pending_notifications")
    assert row["template_key"] == "telegram.resend"
    assert row["chat_id"] == 1001
    # the handler's HTML text is stored as plain text; the outbox escapes it again
    assert row["params"] == {"text": "Your requests: none & more"}
    assert row["idempotency_key"] == f"resend:{update.update_id}:1001"
    user = await harness.pool.fetchrow("SELECT * FROM users WHERE telegram_id = 1001")
    assert row["recipient_id"] == user["id"]


async def test_a_critical_error_alerts_the_admins_once(harness: Harness) -> None:
    for user_id in (1001, 1002, 1003):
        await harness.feed(harness.message(user_id, "/fail system_critical"))
    alerts = await harness.pool.fetch(
        "SELECT * FROM pending_notifications WHERE template_key = 'admin.error_alert'"
    )
    assert [a["chat_id"] for a in alerts] == [555_000_001]
    group = await harness.pool.fetchrow("SELECT * FROM error_records")
    assert group["occurrence_count"] == 3


async def test_a_callback_that_fails_before_answering_gets_an_alert(harness: Harness) -> None:
    update = harness.callback(1002, "raise_before_answer", "ru")
    await harness.feed(update)
    (answer,) = harness.session.callback_answers
    assert answer.callback_query_id == update.callback_query.id  # type: ignore[union-attr]
    assert answer.show_alert is True
    assert answer.text is not None and len(answer.text) <= 200
    assert answer.text.startswith(TEXTS["business"]["ru"])
    await _group(harness.pool, answer.text)
    assert harness.session.texts_to(1002) == []


async def test_a_callback_that_fails_after_answering_gets_a_message(harness: Harness) -> None:
    await harness.feed(harness.callback(1003, "raise_after_answer", "uz"))
    assert [a.text for a in harness.session.callback_answers] == ["working..."]
    (text,) = harness.session.texts_to(1003)
    assert text.startswith(TEXTS["data"]["uz"])
    await _group(harness.pool, text)


async def test_harmless_errors_are_recorded_but_not_shown(harness: Harness) -> None:
    harness.session.fail_next("editMessageText", error_code=400, description=NOT_MODIFIED)
    await harness.feed(harness.callback(1001, "edit_unchanged"))
    (answer,) = harness.session.callback_answers
    assert answer.text is None  # the spinner stops, nothing is said
    assert harness.session.texts_to(1001) == []
    group = await harness.pool.fetchrow("SELECT * FROM error_records")
    assert group["severity"] == "low"
    assert group["context"]["reason"] == "message_not_modified"


async def test_a_user_who_blocked_the_bot_while_it_replies_is_survived(harness: Harness) -> None:
    # the handler's reply and then the error reply both meet a blocked user
    harness.session.fail_next("sendMessage", **BOT_BLOCKED, chat_id=1001, times=2)
    assert await harness.feed(harness.message(1001, "/reply")) is None
    assert harness.session.texts_to(1001) == []
    user = await harness.pool.fetchrow("SELECT * FROM users WHERE telegram_id = 1001")
    assert user["blocked_bot_at"] is not None
    groups = await harness.pool.fetch("SELECT * FROM error_records ORDER BY id")
    assert [g["context"]["reason"] for g in groups] == ["bot_blocked", "bot_blocked"]
    assert groups[1]["context"]["while"] == "error_reply"
    assert not await harness.pool.fetch(
        "SELECT * FROM pending_notifications WHERE template_key = 'admin.error_alert'"
    )
    # the bot carries on: the next update is served, and writing again clears the mark
    await harness.feed(harness.message(1001, "/reply"))
    assert harness.session.texts_to(1001) == ["Your requests: none"]
    user = await harness.pool.fetchrow("SELECT * FROM users WHERE telegram_id = 1001")
    assert user["blocked_bot_at"] is None


async def test_control_flow_exceptions_pass_through(harness: Harness) -> None:
    assert await harness.feed(harness.message(1001, "/skip")) is UNHANDLED
    assert await harness.pool.fetchval("SELECT count(*) FROM error_records") == 0


async def test_when_the_user_cannot_be_loaded_telegrams_language_is_used(
    harness: Harness,
) -> None:
    await harness.pool.execute("ALTER TABLE users RENAME TO users_gone")
    await harness.feed(harness.message(1002, "/reply", "ru"))
    (text,) = harness.session.texts_to(1002)
    assert text.startswith(TEXTS["system_critical"]["ru"])
    row = await _group(harness.pool, text)
    assert row["error_type"].endswith("UndefinedTableError")
    assert row["location"].startswith("database/users.py:load_or_register")
