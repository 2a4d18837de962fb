"""Updates a Telegram user (or a stranger) can send, through the real dispatcher with every
middleware on a real PostgreSQL: names with HTML in them, texts of blanks only, Unicode
digits, bots as senders, update kinds the bot does not know. Each gets a clear answer (or,
with no human behind it, none), the user's mistakes are not recorded as errors, and the
error path never fails."""

from __future__ import annotations

import logging
import time

import asyncpg
import pytest

from middlewares.enhanced_error_handler import _context
from tests.botstack import make_stack, tg_user
from tests.fakes.telegram_api import parse_html

USER = 903_000_001


async def _errors(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT category, severity, message FROM error_records")


@pytest.mark.parametrize("name", ["Anna <3", "<b>Boris", "Tom & Jerry", "</i>", "<a href=x>"])
async def test_start_and_help_greet_a_user_whose_name_holds_html(
    pool: asyncpg.Pool, name: str
) -> None:
    stack = make_stack(pool)
    for command in ("/start", "/help"):
        await stack.feed(stack.message(USER, command, first_name=name))
    texts = stack.session.texts_to(USER)
    assert len(texts) == 2 and not stack.session.rejected
    assert all(parse_html(text)[0].startswith(f"Hello, {name}!") for text in texts)
    assert await _errors(pool) == []


@pytest.mark.parametrize("text", [" ", "\u00a0", "\n \n", "\u2003\t", "\x00"])
async def test_a_blank_description_is_explained_not_recorded(pool: asyncpg.Pool, text: str) -> None:
    stack = make_stack(pool)
    await stack.feed(stack.message(USER, "/new"))
    await stack.feed(stack.callback(USER, "new:repair"))
    await stack.feed(stack.message(USER, text))
    assert "Please describe the problem" in stack.session.texts_to(USER)[-1]
    assert await _errors(pool) == []
    assert await pool.fetchval("SELECT count(*) FROM service_requests") == 0
    await stack.feed(stack.message(USER, "the router \x00 blinks red"))  # still waiting
    assert "is open" in stack.session.texts_to(USER)[-1]
    assert (
        await pool.fetchval("SELECT description FROM service_requests") == "the router  blinks red"
    )


@pytest.mark.parametrize(
    "args", ["² 1 1", "١ 1 1", "1 1", "1 1 1 1", "0 1 1", "1 1 0", "99999999999999999999 1 1", ""]
)
async def test_use_with_anything_but_three_ascii_numbers_gets_the_usage(
    pool: asyncpg.Pool, args: str
) -> None:
    stack = make_stack(pool)
    await pool.execute("INSERT INTO users (telegram_id, role) VALUES ($1, 'technician')", USER)
    await stack.feed(stack.message(USER, f"/use {args}".strip()))
    expected = "None of your requests takes materials now." if not args else "Send /use alone"
    assert parse_html(stack.session.texts_to(USER)[-1])[0].startswith(expected)
    assert await _errors(pool) == []


async def test_updates_without_a_human_sender_reach_no_handler(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    stack = make_stack(pool)
    robot = tg_user(USER, first_name="Robo", is_bot=True)
    await stack.feed(stack.message(USER, "/start", sender=robot))
    await stack.feed(stack.message(USER, "/tasks", sender=robot))
    await stack.feed(stack.callback(USER, "adv:1:1", sender=robot))
    channel_post = stack.update(
        {
            "channel_post": {
                "message_id": 1,
                "date": int(time.time()),
                "chat": {"id": -1001, "type": "channel", "title": "news"},
                "text": "/start",
            }
        }
    )
    await stack.feed(channel_post)
    answers = [c for c in stack.session.calls if c.__api_method__ == "answerCallbackQuery"]
    assert len(answers) == 1 and answers[0].text is None
    assert stack.session.texts_to(USER) == []
    assert await pool.fetchval("SELECT count(*) FROM users") == 0
    assert await _errors(pool) == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_an_update_of_an_unknown_kind_is_left_alone(
    pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture
) -> None:
    stack = make_stack(pool)
    await stack.dp.feed_raw_update(
        stack.bot, {"update_id": 7, "some_future_kind": {"id": 1, "from": tg_user(USER)}}
    )
    await stack.dp.feed_raw_update(stack.bot, {"update_id": 8})
    assert stack.session.calls == []
    assert await _errors(pool) == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("text", ["", " ", "\u00a0", "\n \n", "/", "/start extra"])
def test_the_error_context_is_built_for_any_text(text: str) -> None:
    stack_update = {
        "update_id": 1,
        "message": {
            "message_id": 1,
            "date": 1,
            "chat": {"id": 1, "type": "private"},
            "from": tg_user(1),
            "text": text,
        },
    }
    from aiogram.types import Update

    update = Update.model_validate(stack_update)
    context = _context(update, update, update.message.from_user)
    assert context["update_type"] == "message"
    assert context.get("command") in (None, "/", "/start")
