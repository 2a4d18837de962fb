"""The real bot process against the Bot API fake: each error category, reached through the
bot's own paths, answers the user in their language (en, ru, uz) with an error reference
that exists in ``error_records``; a critical error alerts the admin once; a user who blocked
the bot is survived.

Paths used (no test-only handler in the bot):

- the user's own mistakes (a description over the 1000-character limit, a material number
  that does not exist): explained, never recorded;
- business_logic: staff pressing a stale "Next step" button a second time (``/tasks``);
- inventory: ``/use`` of more units of a material than are in stock;
- transient: Telegram answering 502 to the handler's reply (the reply is queued in the
  outbox and arrives later) and 429 to a reply with a keyboard (not resendable);
- notification: Telegram answering "chat not found" to the handler's reply;
- system: a missing table (``service_requests`` renamed: SQLSTATE 42P01 on ``/my``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from database.pool import create_pool
from handlers.callbacks import AdvanceCb, NewRequestCb
from tests.e2e.conftest import ADMIN_ID, StartBot
from tests.factories import make_material, make_request, make_user
from tests.fakes.telegram_api import (
    BAD_GATEWAY,
    CHAT_NOT_FOUND,
    FakeTelegramAPI,
    retry_after,
)

REFERENCE = re.compile(r"E-[A-Z2-9]{6}")
LANGUAGES = {"en": 600_000_001, "ru": 600_000_002, "uz": 600_000_003}
REFERENCE_LABEL = {"en": "Error reference", "ru": "Код ошибки", "uz": "Xato kodi"}

# What each user must read, as the catalogs translate it (keyed by the reason or the kind).
TEXTS: dict[str, dict[str, str]] = {
    # the user's typing mistake: a material that does not exist (explained, not recorded)
    "no_material": {
        "en": "There is no material #987654. Send /use alone to choose from the list.",
        "ru": "Материала #987654 нет. Отправьте просто /use, чтобы выбрать из списка.",
        "uz": "#987654 material yoʻq. Roʻyxatdan tanlash uchun faqat /use yuboring.",
    },
    # the user's own mistake: explained, no error reference, not recorded
    "description": {
        "en": "Your description has 1001 characters; the limit is 1000. Please shorten it "
        "and send it again.",
        "ru": "В вашем описании 1001 символ, а можно не более 1000. Сократите его и "
        "отправьте ещё раз.",
        "uz": "Tavsifingizda 1001 ta belgi bor, chegara esa 1000. Uni qisqartirib, qayta yuboring.",
    },
    # a request the user may not act on (any more): one refusal, whatever the request
    "permission_denied": {
        "en": "This is not waiting for you: it is not yours to act on, or it has moved on. "
        "Send /tasks to see what is.",
        "ru": "Это не ждёт вас: это не ваша задача или она уже продвинулась. Отправьте "
        "/tasks, чтобы увидеть ваши задачи.",
        "uz": "Bu sizni kutmayapti: bu sizning vazifangiz emas yoki u allaqachon oldinga "
        "siljigan. Vazifalaringizni koʻrish uchun /tasks yuboring.",
    },
    # the stale button: the version the staff saw has moved on
    "concurrent_modification": {
        "en": "This request was changed by someone else a moment ago. Open it again and retry.",
        "ru": "Эту заявку только что изменил кто-то другой. Откройте её снова и повторите.",
        "uz": "Bu arizani hozirgina boshqa kishi oʻzgartirdi. Uni qayta oching va takrorlang.",
    },
    "inventory": {
        "en": "There is not enough of this material in stock.",
        "ru": "Этого материала недостаточно на складе.",
        "uz": "Omborda bu materialdan yetarli emas.",
    },
    "queued": {
        "en": "We could not deliver a message. We will retry.",
        "ru": "Не удалось доставить сообщение. Мы повторим попытку.",
        "uz": "Xabarni yetkazib boʻlmadi. Qayta urinib koʻramiz.",
    },
    "flood": {
        "en": "Too many requests right now. Please try again in 35 seconds.",
        "ru": "Сейчас слишком много запросов. Попробуйте снова через 35 с.",
        "uz": "Hozir soʻrovlar juda koʻp. 35 soniyadan soʻng qayta urinib koʻring.",
    },
    "notification": {
        "en": "We could not deliver our reply. Please send the command again.",
        "ru": "Не удалось доставить наш ответ. Отправьте команду ещё раз.",
        "uz": "Javobimizni yetkazib boʻlmadi. Buyruqni qayta yuboring.",
    },
    "system": {
        "en": "Something went wrong on our side. The team has been notified.",
        "ru": "У нас что-то пошло не так. Команда уже уведомлена.",
        "uz": "Bizda nimadir notoʻgʻri ketdi. Jamoa xabardor qilindi.",
    },
}
# The /start greeting's first words, per language (the reply the 502 delayed).
GREETING = {"en": "Hello,", "ru": "Здравствуйте,", "uz": "Salom,"}


@dataclass
class Chat:
    """One user's conversation with the bot."""

    api: FakeTelegramAPI
    user_id: int
    language: str

    def texts(self) -> list[str]:
        return [m.get("text", "") for m in self.api.messages_to(self.user_id)]

    async def send(self, text: str, replies: int = 1) -> list[str]:
        """Send ``text`` and return the next ``replies`` texts the bot sends."""
        before = len(self.texts())
        self.api.push_message(self.user_id, text, language_code=self.language)
        await self.api.wait_for(lambda: len(self.texts()) >= before + replies, 20)
        return self.texts()[before:]

    async def press(self, data: str) -> str:
        """Press the inline button carrying ``data`` (on whichever message shows it); return
        the text of the callback answer. A list comes as one message per item, so the
        button may still be on its way: wait for it."""

        def shown() -> list[int]:
            return [
                m["message_id"]
                for m in reversed(self.api.messages_to(self.user_id))
                for row in m.get("reply_markup", {}).get("inline_keyboard", [])
                for button in row
                if button.get("callback_data") == data
            ]

        message_id = (await self.api.wait_for(shown, 20))[0]
        update = self.api.push_callback(self.user_id, data, message_id=message_id)
        query_id = update["callback_query"]["id"]
        answer = await self.api.wait_for(
            lambda: next((a for a in self.api.callback_answers if a.query_id == query_id), None),
            20,
        )
        return answer.text or ""


async def _settled(read: Callable[[], Awaitable[Any]], done: Callable[[Any], bool]) -> Any:
    """``read()``'s value once ``done`` says it is complete (the bot's error pipeline writes
    an occurrence within ``ERROR_FLUSH_WINDOW_S``), waiting up to 10 s; else the last value
    read (the caller's assertion then fails on it)."""
    value = await read()
    for _ in range(200):
        if done(value):
            break
        await asyncio.sleep(0.05)
        value = await read()
    return value


async def _group(db: asyncpg.Pool, text: str) -> asyncpg.Record:
    """The error_records row of the reference quoted at the end of ``text``."""
    match = REFERENCE.search(text)
    assert match, f"no error reference in {text!r}"
    row = await _settled(
        lambda: db.fetchrow("SELECT * FROM error_records WHERE reference = $1", match.group()),
        lambda found: found is not None,
    )
    assert row is not None, f"{match.group()} is not in error_records"
    return row


def _assert_reply(text: str, expected: str, language: str) -> None:
    assert "\n" in text, text
    first, second = text.split("\n", 1)
    assert first == expected, (language, text)
    assert second.startswith(REFERENCE_LABEL[language]), (language, text)
    assert "Traceback" not in text and "asyncpg" not in text


async def _user_row(db: asyncpg.Pool, telegram_id: int) -> asyncpg.Record:
    row = await db.fetchrow("SELECT * FROM users WHERE telegram_id = $1", telegram_id)
    assert row is not None
    return row


async def test_each_category_is_answered_in_each_language(
    fake_api: FakeTelegramAPI, start_bot: StartBot, database_url: str
) -> None:
    await start_bot()
    fake_api.add_user(ADMIN_ID, "Admin")
    db = await create_pool(database_url, min_size=1, max_size=2)
    try:
        chats = {lang: Chat(fake_api, uid, lang) for lang, uid in LANGUAGES.items()}
        for lang, chat in chats.items():
            fake_api.push_message(chat.user_id, "/start", language_code=lang)
            await fake_api.wait_for(lambda c=chat: len(c.texts()) == 1, 20)
            assert chat.texts()[0].startswith(GREETING[lang])
            user = await _user_row(db, chat.user_id)
            assert user["language"] == lang

        # the client of the staff's requests has no chat with the bot: the notifications
        # of their requests do not interleave with the replies this test reads
        client = await make_user(db)
        for lang, chat in chats.items():
            user = await _user_row(db, chat.user_id)

            # the user's mistake: /new, pick a type, then a description over the limit is
            # explained in the user's language, with no error reference and no record
            await chat.send("/new")
            await chat.press(NewRequestCb(workflow_type="repair").pack())
            await fake_api.wait_for(lambda c=chat: len(c.texts()) >= 3, 20)
            (reply,) = await chat.send("x" * 1001)
            assert reply == TEXTS["description"][lang]
            assert (
                await _settled(
                    lambda: db.fetchval(
                        "SELECT count(*) FROM error_records WHERE category = 'data'"
                    ),
                    lambda n: n == 0,
                )
                == 0
            )
            # the user is still at the description step: a valid one opens the request; the
            # reply says so, and no "your request is now: new" follows it from the outbox
            (opened,) = await chat.send("Router is broken, flat 5")
            assert not REFERENCE.search(opened) and "#" in opened
            assert not await db.fetchval(
                "SELECT count(*) FROM pending_notifications n JOIN service_requests r "
                "ON r.id = n.request_id WHERE r.description = 'Router is broken, flat 5' "
                "AND n.template_key LIKE 'request.%' AND n.recipient_id = r.client_id"
            )

            # business_logic: a manager presses "Next step" twice on the same list
            await db.execute("UPDATE users SET role = 'manager' WHERE id = $1", user["id"])
            request = await make_request(db, client_id=client["id"], state="new", role="manager")
            await chat.send("/tasks")
            button = AdvanceCb(request_id=request["id"], version=request["version"]).pack()
            first = await chat.press(button)
            assert f"#{request['id']}" in first
            # pressed again: the request is the junior managers' now, so the manager may
            # not act on it and gets the one refusal (it says nothing about the request)
            again = await chat.press(button)
            group = await _group(db, again)
            assert group["category"] == "business_logic"
            assert group["context"]["reason"] == "permission_denied"
            _assert_reply(again, TEXTS["permission_denied"][lang], lang)
            moved = await db.fetchrow("SELECT * FROM service_requests WHERE id = $1", request["id"])
            assert moved["version"] == request["version"] + 1  # applied once, not twice
            # someone else changed a request that is still the manager's: told so
            other = await make_request(db, client_id=client["id"], state="new", role="manager")
            await chat.send("/tasks")
            await db.execute("UPDATE service_requests SET version = 2 WHERE id = $1", other["id"])
            stale = await chat.press(AdvanceCb(request_id=other["id"], version=1).pack())
            group = await _group(db, stale)
            assert group["context"]["reason"] == "concurrent_modification"
            _assert_reply(stale, TEXTS["concurrent_modification"][lang], lang)

            # inventory: a technician uses 5 units of a material with 1 in stock
            await db.execute("UPDATE users SET role = 'technician' WHERE id = $1", user["id"])
            work = await make_request(
                db, client_id=client["id"], state="in_work", role="technician"
            )
            material = await make_material(db, sku=f"CABLE-{lang}", balance=1)
            (reply,) = await chat.send(f"/use {work['id']} {material['id']} 5")
            _assert_reply(reply, TEXTS["inventory"][lang], lang)
            assert (await _group(db, reply))["category"] == "inventory"
            balance = await db.fetchval(
                "SELECT balance FROM materials WHERE id = $1", material["id"]
            )
            assert balance == 1
            (ok,) = await chat.send(f"/use {work['id']} {material['id']} 1")
            assert material["name"] in ok and not REFERENCE.search(ok)

            # a material that does not exist: the user's mistake, not an error group
            groups = await db.fetchval("SELECT count(*) FROM error_records")
            (reply,) = await chat.send(f"/use {work['id']} 987654 1")
            assert reply == TEXTS["no_material"][lang] and not REFERENCE.search(reply)
            assert await db.fetchval("SELECT count(*) FROM error_records") == groups

            # transient: Telegram answers 502 to the reply; it is queued and arrives later
            await db.execute("UPDATE users SET role = 'client' WHERE id = $1", user["id"])
            fake_api.fail_next("sendMessage", **BAD_GATEWAY, chat_id=chat.user_id)
            replies = await chat.send("/start", replies=2)
            (reply,) = [text for text in replies if REFERENCE.search(text)]
            (resent,) = [text for text in replies if not REFERENCE.search(text)]
            _assert_reply(reply, TEXTS["queued"][lang], lang)
            assert (await _group(db, reply))["category"] == "transient"
            assert resent.startswith(GREETING[lang])

            # transient: 429 on a reply with a keyboard (cannot be resent as plain text)
            fake_api.fail_next("sendMessage", **retry_after(35), chat_id=chat.user_id)
            (reply,) = await chat.send("/language")
            _assert_reply(reply, TEXTS["flood"][lang], lang)
            assert (await _group(db, reply))["category"] == "transient"

            # notification: Telegram cannot deliver the handler's own reply
            fake_api.fail_next("sendMessage", **CHAT_NOT_FOUND, chat_id=chat.user_id)
            (reply,) = await chat.send("/help")
            _assert_reply(reply, TEXTS["notification"][lang], lang)
            assert (await _group(db, reply))["category"] == "notification"

        # system: a table is missing (a bug or a missing migration), for everyone
        await db.execute("ALTER TABLE service_requests RENAME TO service_requests_moved")
        references = set()
        for lang, chat in chats.items():
            (reply,) = await chat.send("/my")
            _assert_reply(reply, TEXTS["system"][lang], lang)
            group = await _group(db, reply)
            assert (group["category"], group["severity"]) == ("system", "critical")
            assert group["error_type"].endswith("UndefinedTableError")
            references.add(group["reference"])
        (reference,) = references  # one group for the three users
        group = await _settled(
            lambda: db.fetchrow("SELECT * FROM error_records WHERE reference = $1", reference),
            lambda row: row is not None and row["occurrence_count"] == 3,
        )
        assert group["occurrence_count"] == 3

        # the admin is alerted once, through the outbox
        await fake_api.wait_for(
            lambda: any(reference in t for t in Chat(fake_api, ADMIN_ID, "en").texts()), 20
        )
        alerts = [t for t in Chat(fake_api, ADMIN_ID, "en").texts() if "Critical error" in t]
        assert len(alerts) == 1
        assert "UndefinedTableError" in alerts[0]

        # one group per kind of error, counted once per user
        kinds = await _settled(
            lambda: db.fetch("SELECT category, occurrence_count FROM error_records"),
            lambda rows: (
                len({k["category"] for k in rows}) == 5
                and all(k["occurrence_count"] == 3 for k in rows)
            ),
        )
        assert all(k["occurrence_count"] == 3 for k in kinds)
        assert {k["category"] for k in kinds} == {
            "business_logic",
            "inventory",
            "transient",
            "notification",
            "system",
        }
    finally:
        await db.close()


async def test_a_user_who_blocked_the_bot_is_survived(
    fake_api: FakeTelegramAPI, start_bot: StartBot, database_url: str
) -> None:
    await start_bot()
    db = await create_pool(database_url, min_size=1, max_size=2)
    try:
        blocked = Chat(fake_api, 600_000_010, "ru")
        other = Chat(fake_api, 600_000_011, "uz")
        fake_api.push_message(blocked.user_id, "/start", language_code="ru")
        await fake_api.wait_for(lambda: len(blocked.texts()) == 1, 20)

        # the user blocks the bot; their next command cannot be answered at all
        fake_api.blocked_users.add(blocked.user_id)
        fake_api.push_message(blocked.user_id, "/my")
        await fake_api.wait_for(
            lambda: len([c for c in fake_api.calls("sendMessage") if not c.ok]) >= 2, 20
        )
        await _until_marked_unreachable(db, blocked.user_id)
        user = await _user_row(db, blocked.user_id)
        assert user["blocked_bot_at"] is not None
        groups = await _settled(lambda: db.fetch("SELECT * FROM error_records ORDER BY id"), bool)
        assert groups and all(g["category"] == "notification" for g in groups)
        assert {g["context"]["reason"] for g in groups} == {"bot_blocked"}
        # no admin alert for a user who blocked the bot
        assert not await db.fetchval(
            "SELECT count(*) FROM pending_notifications WHERE template_key = 'admin.error_alert'"
        )

        # the bot carries on serving others ...
        (reply,) = await other.send("/start")
        assert reply.startswith(GREETING["uz"])
        # ... and the user once they unblock it and write again
        fake_api.blocked_users.discard(blocked.user_id)
        (reply,) = await blocked.send("/start")
        assert reply.startswith(GREETING["ru"])
        user = await _user_row(db, blocked.user_id)
        assert user["blocked_bot_at"] is None
    finally:
        await db.close()


async def _until_marked_unreachable(db: asyncpg.Pool, telegram_id: int) -> None:
    """Wait (up to 10 s) until the bot's transaction marking the user unreachable committed."""
    for _ in range(200):
        if await db.fetchval(
            "SELECT blocked_bot_at IS NOT NULL FROM users WHERE telegram_id = $1", telegram_id
        ):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the user was never marked unreachable")
