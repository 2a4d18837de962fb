"""The Bot API answers getUpdates and sendMessage with 502 Bad Gateway or after a long
silence (the sender's send timeout) for a while, then recovers.

Polling goes on through it (the process does not exit and polls again afterwards), the
update sent meanwhile is answered afterwards, the notifications due meanwhile are each
delivered exactly once afterwards (those that ran out of attempts during the outage too),
and admins get exactly one outage alert.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from database import outbox
from database.pool import create_pool
from tests.e2e.conftest import ADMIN_ID, StartBot
from tests.fakes.telegram_api import DEFAULT_TOKEN, FakeTelegramAPI

pytestmark = pytest.mark.e2e

OUTAGE_S = 8.0
FAILING = ("getupdates", "sendmessage")
CHATS = [888_000_000 + n for n in range(6)]
LATE_USER = 888_100_000  # writes while Telegram is away
ALERT_MARK = "telegram was unreachable"


class FlakyTelegramAPI(FakeTelegramAPI):
    """The fake whose getUpdates and sendMessage fail while ``outage`` is set: every other
    call answers 502 at once, the rest after ``slow_s`` seconds of silence. A long poll
    that began before the outage and would answer during it answers 502 too (its updates
    stay pending), as an open connection to an unreachable Telegram does."""

    def __init__(self, *args: Any, slow_s: float = 3.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outage = False
        self.slow_s = slow_s
        self.failed: collections.Counter[str] = collections.Counter()

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"].lower()
        if self.outage and method in FAILING:
            self.failed[method] += 1
            if sum(self.failed.values()) % 2 == 0:
                await asyncio.sleep(self.slow_s)
            return self._bad_gateway()
        response = await super()._handle(request)
        if self.outage and method == "getupdates":
            self.failed[method] += 1
            return self._bad_gateway()
        return response

    @staticmethod
    def _bad_gateway() -> web.Response:
        body = {"ok": False, "error_code": 502, "description": "Bad Gateway"}
        return web.json_response(body, status=502)


@pytest_asyncio.fixture
async def fake_api() -> AsyncIterator[FlakyTelegramAPI]:
    """The flaky fake in place of the plain one (``start_bot`` points the bot at it)."""
    api = FlakyTelegramAPI(token=DEFAULT_TOKEN)
    await api.start()
    try:
        yield api
    finally:
        api.outage = False
        await api.stop()


async def test_polling_and_delivery_survive_a_telegram_outage(
    fake_api: FlakyTelegramAPI, start_bot: StartBot, database_url: str
) -> None:
    api = fake_api
    for chat in CHATS:
        api.add_user(chat, f"Chat {chat}")
    bot = await start_bot(
        OUTAGE_ALERT_TELEGRAM_S="3", NOTIFICATION_SEND_TIMEOUT_S="1",
        NOTIFICATION_POLL_INTERVAL_S="0.5",
        # two quick attempts: rows die of their budget during the outage, and come back
        RETRY_MAX_ATTEMPTS="2", RETRY_BASE_DELAY_S="1", RETRY_MAX_DELAY_S="2",
    )  # fmt: skip
    api.push_message(ADMIN_ID, "/start")  # the admin is known before the outage
    await api.wait_for(lambda: api.last_message(ADMIN_ID), 30)

    api.outage = True
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn, conn.transaction():
            for chat in CHATS:
                await outbox.enqueue(
                    conn, idempotency_key=f"during-{chat}", chat_id=chat,
                    template_key="admin.text", params={"text": f"due during the outage {chat}"},
                )  # fmt: skip
    finally:
        await pool.close()
    api.push_message(LATE_USER, "/start")
    await asyncio.sleep(OUTAGE_S)
    assert api.failed["getupdates"] >= 2 and api.failed["sendmessage"] >= 1, api.failed
    dead = await _dead(database_url)
    assert dead, "some rows ran out of attempts during the outage"
    assert bot.process.poll() is None, bot.log()
    polls_before = api.poll_count
    api.outage = False

    await api.wait_for(lambda: api.last_message(LATE_USER), 60)  # polling went on
    assert api.poll_count > polls_before
    await api.wait_for(lambda: all(_delivered(api, chat) for chat in CHATS), 60)
    await api.wait_for(lambda: _alerts(api), 60)
    await asyncio.sleep(3)  # a duplicate or a second alert would have come by now
    assert all(_delivered(api, chat) == 1 for chat in CHATS), [_delivered(api, c) for c in CHATS]
    alerts = _alerts(api)
    assert len(alerts) == 1, alerts
    assert "Bot API call" in alerts[0], alerts[0]
    assert bot.stop() == 0, bot.log()[-3000:]


def _delivered(api: FakeTelegramAPI, chat: int) -> int:
    return sum(
        1 for m in api.messages_to(chat) if m.get("text", "").startswith("due during the outage")
    )


def _alerts(api: FakeTelegramAPI) -> list[str]:
    texts = [m.get("text", "") for m in api.messages_to(ADMIN_ID)]
    return [t for t in texts if ALERT_MARK in t.lower()]


async def _dead(url: str) -> list[int]:
    pool = await create_pool(url, min_size=1, max_size=1)
    try:
        rows = await pool.fetch("SELECT id FROM pending_notifications WHERE status = 'dead'")
    finally:
        await pool.close()
    return [r["id"] for r in rows]
