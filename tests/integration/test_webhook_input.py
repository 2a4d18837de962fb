"""The webhook endpoint with the right secret and a body that is not a Telegram Update:
400 and one log line, nothing started in the background (no "Task exception was never
retrieved"); a real Update with the right secret is handled by the real dispatcher."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
from aiohttp import web

from bot.metrics import Metrics
from bot.webhook import WebhookHandler, add_webhook_route
from tests.botstack import BotStack, make_stack

SECRET = "s3cret-token_value"
PATH = "/telegram/webhook"
USER = 902_000_001


@pytest_asyncio.fixture
async def served(pool: asyncpg.Pool) -> AsyncIterator[tuple[str, WebhookHandler, BotStack]]:
    stack = make_stack(pool)
    metrics = Metrics(instance_id="t", mode="webhook")
    handler = WebhookHandler(stack.dp, stack.bot, secret_token=SECRET, metrics=metrics)
    app = web.Application()
    add_webhook_route(app, handler, PATH)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}{PATH}", handler, stack
    finally:
        await runner.cleanup()


BAD_BODIES: list[tuple[str, bytes]] = [
    ("malformed JSON", b'{"update_id": 1, "message": '),
    ("not UTF-8", b"\xff\xfe\x00{"),
    ("empty", b""),
    ("a list", b"[1, 2, 3]"),
    ("a number", b"42"),
    ("null", b"null"),
    ("no update_id", b'{"message": {"text": "hi"}}'),
    ("wrong types", b'{"update_id": "x", "message": 5}'),
    ("a message without a chat", b'{"update_id": 5, "message": {"message_id": 1, "date": 1}}'),
]


@pytest.mark.parametrize("body", [b for _, b in BAD_BODIES], ids=[n for n, _ in BAD_BODIES])
async def test_a_body_that_is_not_an_update_gets_400_one_line_and_no_task(
    served: tuple[str, WebhookHandler, BotStack],
    body: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, handler, stack = served
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    caplog.set_level(logging.INFO)
    try:
        async with aiohttp.ClientSession() as http:
            response = await http.post(
                url,
                data=body,
                headers={
                    "X-Telegram-Bot-Api-Secret-Token": SECRET,
                    "Content-Type": "application/json",
                },
            )
            assert response.status == 400
        assert not handler._background_feed_update_tasks
        await asyncio.sleep(0.05)
    finally:
        loop.set_exception_handler(previous)
    assert not unhandled
    webhook_lines = [r for r in caplog.records if r.name == "bot.webhook"]
    assert len(webhook_lines) == 1 and webhook_lines[0].levelno == logging.WARNING
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert stack.session.calls == []


async def test_the_wrong_secret_is_401_and_a_real_update_is_handled(
    served: tuple[str, WebhookHandler, BotStack], pool: asyncpg.Pool
) -> None:
    url, _handler, stack = served
    update = stack.message(USER, "/start").model_dump(mode="json", exclude_none=True)
    async with aiohttp.ClientSession() as http:
        wrong = await http.post(url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "x"})
        assert wrong.status == 401
        response = await http.post(
            url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
        )
        assert response.status == 200
    for _ in range(100):
        if stack.session.texts_to(USER):
            break
        await asyncio.sleep(0.05)
    assert "Hello" in stack.session.texts_to(USER)[0]
    assert await pool.fetchval("SELECT count(*) FROM users WHERE telegram_id = $1", USER) == 1
