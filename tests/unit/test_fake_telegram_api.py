"""The Bot API fake, driven by a real aiogram Bot over HTTP."""

from __future__ import annotations

import asyncio
import struct
import time
import zlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramForbiddenError,
    TelegramMigrateToChat,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.types import (
    BotCommand,
    BotCommandScopeChat,
    BufferedInputFile,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
)

from tests.fakes.telegram_api import (
    BAD_GATEWAY,
    BOT_BLOCKED,
    DEFAULT_TOKEN,
    USER_DEACTIVATED,
    FakeTelegramAPI,
    migrate_to_chat,
    retry_after,
)

USER = 42


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height)))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def _keyboard(*data: str) -> InlineKeyboardMarkup:
    buttons = [[InlineKeyboardButton(text=item.title(), callback_data=item)] for item in data]
    return InlineKeyboardMarkup(inline_keyboard=buttons)


def _data(markup: object) -> list[str | None]:
    assert isinstance(markup, InlineKeyboardMarkup)
    return [button.callback_data for row in markup.inline_keyboard for button in row]


@pytest.fixture
async def api() -> AsyncIterator[FakeTelegramAPI]:
    async with FakeTelegramAPI() as fake:
        fake.add_user(USER, "Ann")
        yield fake


@pytest.fixture
async def bot(api: FakeTelegramAPI) -> AsyncIterator[Bot]:
    session = AiohttpSession(api=TelegramAPIServer.from_base(api.base_url))
    async with Bot(DEFAULT_TOKEN, session=session) as client:
        yield client


async def test_get_me_parses_as_the_bot_user(bot: Bot) -> None:
    me = await bot.get_me()
    assert (me.id, me.is_bot, me.username) == (123456789, True, "fake_test_bot")
    assert me.can_join_groups is True
    assert me.supports_inline_queries is False


async def test_send_message_returns_a_full_message(api: FakeTelegramAPI, bot: Bot) -> None:
    first = await bot.send_message(USER, "Hello", reply_markup=_keyboard("yes"))
    second = await bot.send_message(USER, "Again")
    assert (first.message_id, second.message_id) == (1, 2)
    assert first.chat.id == USER and first.chat.type == "private"
    assert first.from_user is not None and first.from_user.id == bot.id
    assert first.text == "Hello"
    assert _data(first.reply_markup) == ["yes"]
    assert second.reply_markup is None
    assert [m["text"] for m in api.messages_to(USER)] == ["Hello", "Again"]
    call = api.sent[-2]
    assert call.method == "sendMessage"
    assert call.params["reply_markup"] == {
        "inline_keyboard": [[{"text": "Yes", "callback_data": "yes"}]]
    }


async def test_unknown_chat_is_not_found(bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest, match="Bad Request: chat not found"):
        await bot.send_message(777, "hi")


async def test_injected_429_raises_retry_after_once(api: FakeTelegramAPI, bot: Bot) -> None:
    api.fail_next("sendMessage", **retry_after(7))
    with pytest.raises(TelegramRetryAfter) as caught:
        await bot.send_message(USER, "hi")
    assert caught.value.retry_after == 7
    assert "Too Many Requests: retry after 7" in str(caught.value)
    assert (await bot.send_message(USER, "hi")).text == "hi"


@pytest.mark.parametrize("spec", [BOT_BLOCKED, USER_DEACTIVATED])
async def test_injected_403_raises_forbidden(api: FakeTelegramAPI, bot: Bot, spec: dict) -> None:
    api.fail_next("SENDMESSAGE", **spec)
    with pytest.raises(TelegramForbiddenError, match=spec["description"]):
        await bot.send_message(USER, "hi")


async def test_blocked_users_get_403(api: FakeTelegramAPI, bot: Bot) -> None:
    await bot.send_message(USER, "before")
    api.blocked_users.add(USER)
    with pytest.raises(TelegramForbiddenError, match="bot was blocked by the user"):
        await bot.send_message(USER, "after")


async def test_injected_migrate_raises_with_new_chat_id(api: FakeTelegramAPI, bot: Bot) -> None:
    api.fail_next("sendMessage", **migrate_to_chat(-100123))
    with pytest.raises(TelegramMigrateToChat) as caught:
        await bot.send_message(USER, "hi")
    assert caught.value.migrate_to_chat_id == -100123


async def test_injected_502_raises_server_error(api: FakeTelegramAPI, bot: Bot) -> None:
    api.fail_next("sendMessage", **BAD_GATEWAY)
    with pytest.raises(TelegramServerError, match="Bad Gateway"):
        await bot.send_message(USER, "hi")


async def test_fail_next_honours_chat_filter_and_times(api: FakeTelegramAPI, bot: Bot) -> None:
    api.add_user(43, "Bob")
    api.fail_next("sendMessage", **BAD_GATEWAY, times=2, chat_id=43)
    assert (await bot.send_message(USER, "not affected")).text == "not affected"
    for _ in range(2):
        with pytest.raises(TelegramServerError):
            await bot.send_message(43, "hi")
    assert (await bot.send_message(43, "third")).text == "third"


async def test_pushed_command_has_bot_command_entity(api: FakeTelegramAPI, bot: Bot) -> None:
    api.push_message(USER, "/start ref_1")
    api.push_message(USER, "/help@fake_test_bot")
    api.push_message(USER, "plain text")
    first, second, third = await bot.get_updates()
    assert first.message is not None and first.message.text == "/start ref_1"
    assert first.message.from_user is not None and first.message.from_user.id == USER
    entity = first.message.entities[0]
    assert (entity.type, entity.offset, entity.length) == ("bot_command", 0, 6)
    assert second.message.entities[0].length == len("/help@fake_test_bot")
    assert third.message.entities is None
    assert second.update_id == first.update_id + 1


async def test_pushed_callback_parses_as_callback_query(api: FakeTelegramAPI, bot: Bot) -> None:
    sent = await bot.send_message(USER, "Pick", reply_markup=_keyboard("a", "b"))
    api.push_callback(USER, "b")
    (update,) = await bot.get_updates()
    query = update.callback_query
    assert query is not None
    assert query.data == "b" and query.chat_instance
    assert query.from_user.id == USER
    assert query.message is not None and query.message.message_id == sent.message_id
    with pytest.raises(ValueError, match="no button"):
        api.push_callback(USER, "not-on-the-keyboard")


async def test_offset_confirms_updates(api: FakeTelegramAPI, bot: Bot) -> None:
    api.push_message(USER, "one")
    api.push_message(USER, "two")
    first, second = await bot.get_updates()
    assert len(await bot.get_updates()) == 2  # not confirmed yet
    assert [u.update_id for u in await bot.get_updates(offset=first.update_id + 1)] == [
        second.update_id
    ]
    assert await bot.get_updates(offset=second.update_id + 1) == []
    assert api.pending_updates == []


async def test_long_poll_returns_as_soon_as_an_update_arrives(
    api: FakeTelegramAPI, bot: Bot
) -> None:
    started = time.monotonic()
    assert await bot.get_updates(timeout=1) == []
    assert time.monotonic() - started >= 0.9
    poll = asyncio.create_task(bot.get_updates(timeout=20))
    await api.wait_until_polling(timeout=5)
    await asyncio.sleep(0.1)
    started = time.monotonic()
    api.push_message(USER, "wake up")
    (update,) = await asyncio.wait_for(poll, 5)
    assert update.message is not None and update.message.text == "wake up"
    assert time.monotonic() - started < 2


async def test_second_poller_terminates_the_first(api: FakeTelegramAPI, bot: Bot) -> None:
    first = asyncio.create_task(bot.get_updates(timeout=20))
    await api.wait_for(lambda: api.poll_count == 1)
    second = asyncio.create_task(bot.get_updates(timeout=1))
    with pytest.raises(TelegramConflictError, match="terminated by other getUpdates"):
        await asyncio.wait_for(first, 5)
    assert await second == []


async def test_webhook_blocks_get_updates(bot: Bot) -> None:
    await bot.set_webhook("https://example.com/hook")
    with pytest.raises(TelegramConflictError, match="webhook is active"):
        await bot.get_updates()
    await bot.delete_webhook()
    assert await bot.get_updates() == []


async def test_edit_message_text(api: FakeTelegramAPI, bot: Bot) -> None:
    sent = await bot.send_message(USER, "Status: new", reply_markup=_keyboard("go"))
    same = {"chat_id": USER, "message_id": sent.message_id, "reply_markup": _keyboard("go")}
    with pytest.raises(TelegramBadRequest, match="message is not modified: specified new message"):
        await bot.edit_message_text(text="Status: new", **same)
    edited = await bot.edit_message_text(text="Status: done", **same)
    assert edited.text == "Status: done" and edited.edit_date is not None
    assert api.last_message(USER)["text"] == "Status: done"
    # Like Telegram, omitting reply_markup in an edit removes the inline keyboard.
    await bot.edit_message_text(chat_id=USER, message_id=sent.message_id, text="Closed")
    assert "reply_markup" not in api.last_message(USER)
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text(chat_id=USER, message_id=999, text="x")


async def test_edit_reply_markup(api: FakeTelegramAPI, bot: Bot) -> None:
    sent = await bot.send_message(USER, "Pick", reply_markup=_keyboard("a"))
    ids = {"chat_id": USER, "message_id": sent.message_id}
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_reply_markup(**ids, reply_markup=_keyboard("a"))
    edited = await bot.edit_message_reply_markup(**ids, reply_markup=_keyboard("b"))
    assert _data(edited.reply_markup) == ["b"]
    assert api.messages_to(USER)[0]["reply_markup"]["inline_keyboard"][0][0]["callback_data"] == "b"


async def test_answer_callback_query_once(api: FakeTelegramAPI, bot: Bot) -> None:
    await bot.send_message(USER, "Pick", reply_markup=_keyboard("a"))
    query_id = api.press_button(USER, "A")["callback_query"]["id"]
    assert await bot.answer_callback_query(query_id, text="Saved", show_alert=True)
    assert [(a.query_id, a.text, a.show_alert) for a in api.callback_answers] == [
        (query_id, "Saved", True)
    ]
    for bad_id in (query_id, "12345"):
        with pytest.raises(TelegramBadRequest, match="query is too old"):
            await bot.answer_callback_query(bad_id)


async def test_send_photo_upload_is_recorded(api: FakeTelegramAPI, bot: Bot) -> None:
    png = _png(1000, 500)
    message = await bot.send_photo(USER, BufferedInputFile(png, "chart.png"), caption="Chart")
    assert message.caption == "Chart"
    assert message.photo is not None
    assert (message.photo[-1].width, message.photo[-1].height) == (1000, 500)
    assert max(p.width for p in message.photo[:-1]) < 1000
    call = api.sent[-1]
    assert call.method == "sendPhoto" and call.params["caption"] == "Chart"
    assert call.params["photo"].size == len(png)
    again = await bot.send_photo(USER, message.photo[-1].file_id)
    assert again.photo is not None and again.photo[-1].width == 1000
    with pytest.raises(TelegramBadRequest, match="IMAGE_PROCESS_FAILED"):
        await bot.send_photo(USER, BufferedInputFile(b"not an image", "x.png"))


async def test_send_document(api: FakeTelegramAPI, bot: Bot) -> None:
    data = b"id;status\n1;new\n"
    message = await bot.send_document(USER, BufferedInputFile(data, "report.csv"), caption="CSV")
    assert message.document is not None
    assert (message.document.file_name, message.document.file_size) == ("report.csv", len(data))
    assert message.document.mime_type == "text/csv"
    assert api.sent[-1].params["document"].data == data


async def test_delete_message_and_chat_action(api: FakeTelegramAPI, bot: Bot) -> None:
    sent = await bot.send_message(USER, "temporary")
    assert await bot.send_chat_action(USER, "typing")
    assert await bot.delete_message(USER, sent.message_id)
    assert api.messages_to(USER) == []
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(USER, sent.message_id)


async def test_commands_roundtrip(api: FakeTelegramAPI, bot: Bot) -> None:
    await bot.set_my_commands([BotCommand(command="start", description="Start")])
    assert [c.command for c in await bot.get_my_commands()] == ["start"]
    assert await bot.get_my_commands(language_code="ru") == []
    assert api.get_commands() == [{"command": "start", "description": "Start"}]
    with pytest.raises(TelegramBadRequest, match="BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand(command="Bad-Name", description="x")])


async def test_rejected_method_raises_bad_request() -> None:
    async with FakeTelegramAPI(reject_methods={"setMyCommands"}) as api:
        session = AiohttpSession(api=TelegramAPIServer.from_base(api.base_url))
        async with Bot(DEFAULT_TOKEN, session=session) as bot:
            with pytest.raises(TelegramBadRequest, match="method is disabled"):
                await bot.set_my_commands([BotCommand(command="start", description="Start")])
            assert (await bot.get_me()).is_bot
        assert api.commands == {}


async def test_http_level_shapes(api: FakeTelegramAPI) -> None:
    async with aiohttp.ClientSession(api.base_url) as http:
        async with http.post("/bot1:wrong/getMe") as response:
            assert response.status == 401
            assert await response.json() == {
                "ok": False,
                "error_code": 401,
                "description": "Unauthorized",
            }
        async with http.post(f"/bot{DEFAULT_TOKEN}/noSuchMethod") as response:
            assert response.status == 404
            assert await response.json() == {
                "ok": False,
                "error_code": 404,
                "description": "Not Found",
            }
        async with http.get(f"/bot{DEFAULT_TOKEN}/GETME") as response:
            assert (await response.json())["result"]["is_bot"] is True
        payload = {"chat_id": USER, "text": "json body", "reply_markup": {"inline_keyboard": []}}
        async with http.post(f"/bot{DEFAULT_TOKEN}/sendMessage", json=payload) as response:
            body = await response.json()
    assert body["ok"] is True and body["result"]["text"] == "json body"
    assert "reply_markup" not in body["result"]


async def test_html_parse_mode(api: FakeTelegramAPI, bot: Bot) -> None:
    message = await bot.send_message(
        USER, "<b>Order</b> &lt;#7&gt; 😀 <i>ok</i>\n", parse_mode="HTML"
    )
    assert message.text == "Order <#7> 😀 ok"
    assert [(e.type, e.offset, e.length) for e in message.entities or []] == [
        ("bold", 0, 5),
        ("italic", 14, 2),  # the emoji counts as two UTF-16 code units
    ]
    with pytest.raises(TelegramBadRequest, match="can't parse entities: Unsupported start tag"):
        await bot.send_message(USER, "Price < 5 and > 3", parse_mode="HTML")


async def test_wait_for_reports_recent_calls_on_timeout(api: FakeTelegramAPI, bot: Bot) -> None:
    await bot.send_message(USER, "something else")
    with pytest.raises(AssertionError, match="something else"):
        await api.wait_for(lambda: api.last_message(USER)["text"] == "expected", timeout=0.2)
    assert await api.wait_for(lambda: api.last_message(USER), timeout=1)


async def test_commands_are_checked_as_telegram_checks_them(api: FakeTelegramAPI, bot: Bot) -> None:
    """Names of 1-32 characters of a-z0-9_, descriptions of 1-256, a known scope type, a
    chat scope's chat known to the bot, a two-letter language code."""
    good = [BotCommand(command="start", description="Start")]
    for bad in (
        [BotCommand(command="x" * 33, description="Start")],
        [BotCommand(command="", description="Start")],
        [BotCommand(command="start", description="d" * 257)],
        [BotCommand(command="start", description=" ")],
    ):
        with pytest.raises(TelegramBadRequest):
            await bot.set_my_commands(bad)
    with pytest.raises(TelegramBadRequest, match="language code"):
        await bot.set_my_commands(good, language_code="rus")
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.set_my_commands(good, scope=BotCommandScopeChat(chat_id=987654321))
    await bot.set_my_commands(good, scope=BotCommandScopeChat(chat_id=USER), language_code="ru")
    chat_scope = {"type": "chat", "chat_id": USER}
    assert api.get_commands(chat_scope, "ru") == [{"command": "start", "description": "Start"}]
    assert api.get_commands(chat_scope) == []
    assert [
        c.command
        for c in await bot.get_my_commands(
            scope=BotCommandScopeChat(chat_id=USER), language_code="ru"
        )
    ] == ["start"]


async def test_an_unknown_scope_type_is_refused(api: FakeTelegramAPI) -> None:
    async with (
        aiohttp.ClientSession(api.base_url) as http,
        http.post(
            f"/bot{DEFAULT_TOKEN}/setMyCommands",
            json={"commands": [{"command": "a", "description": "b"}], "scope": {"type": "galaxy"}},
        ) as response,
    ):
        body = await response.json()
    assert response.status == 400 and "BotCommandScope" in body["description"]
