"""Shared set-up of the notification tests: the Bot API fake over HTTP, a real aiogram ``Bot``
pointed at it (so aiogram's own parsing of Telegram's error bodies is exercised), the real
renderer, and builders of outbox rows.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode

from bot.i18n import create_i18n
from bot.notification_texts import make_renderer
from database import outbox
from recovery.errors import ErrorHandler
from recovery.notifications import NotificationRetryManager, RetryPolicy
from recovery.rate_limit import TelegramRateLimiter
from tests.fakes.telegram_api import DEFAULT_TOKEN, FakeTelegramAPI

_keys = itertools.count(1)
_instances = itertools.count(1)


@dataclass
class Harness:
    """The fake, the bot and the pool of one test."""

    api: FakeTelegramAPI
    bot: Bot
    pool: asyncpg.Pool
    renderer: Any = field(default_factory=lambda: make_renderer(create_i18n("en")))

    async def send(self, chat_id: int, text: str) -> int | None:
        """The bot's sender: ``sendMessage`` in HTML parse mode, as ``bot.app`` wires it."""
        message = await self.bot.send_message(chat_id, text)
        return message.message_id

    def manager(self, **overrides: Any) -> NotificationRetryManager:
        """A manager on this harness: rate limiter off, seeded jitter, its own instance id,
        errors recorded through a real ``ErrorHandler``."""
        options: dict[str, Any] = {
            "sender": self.send,
            "renderer": self.renderer,
            "policy": RetryPolicy(max_attempts=5, base_delay_s=30.0, max_delay_s=3600.0),
            "rate_limiter": TelegramRateLimiter(enabled=False),
            "error_handler": ErrorHandler(self.pool),
            "instance_id": f"test-sender-{next(_instances)}",
            "rng": random.Random(5),
            "lease_s": 60.0,
            "send_timeout_s": 10.0,
        }
        options.update(overrides)
        return NotificationRetryManager(self.pool, **options)

    def texts_to(self, chat_id: int) -> list[str]:
        """Texts the fake accepted for ``chat_id``, oldest first (as the user sees them)."""
        return [
            str(call.response["result"]["text"])
            for call in self.api.calls("sendMessage")
            if call.ok and call.params.get("chat_id") == chat_id and call.response
        ]


@asynccontextmanager
async def open_harness(pool: asyncpg.Pool) -> AsyncIterator[Harness]:
    """Start the fake and a Bot pointed at it; close both afterwards."""
    async with FakeTelegramAPI(token=DEFAULT_TOKEN) as api:
        bot = Bot(
            DEFAULT_TOKEN,
            session=AiohttpSession(api=TelegramAPIServer.from_base(api.base_url)),
            default=DefaultBotProperties(parse_mode=ParseMode.HTML),
        )
        try:
            yield Harness(api=api, bot=bot, pool=pool)
        finally:
            await bot.session.close()


async def enqueue_text(
    db: asyncpg.Pool | asyncpg.Connection,
    chat_id: int,
    text: str,
    *,
    recipient_id: int | None = None,
    key: str | None = None,
) -> int:
    """Enqueue an ``admin.text`` notification carrying ``text``; returns its id."""
    async with _connection(db) as conn:
        row_id = await outbox.enqueue(
            conn,
            idempotency_key=key or f"test:{next(_keys)}",
            chat_id=chat_id,
            recipient_id=recipient_id,
            template_key="admin.text",
            params={"text": text},
        )
    assert row_id is not None
    return row_id


async def row(pool: asyncpg.Pool, row_id: int) -> asyncpg.Record:
    """The outbox row with the seconds from its last change to its next attempt."""
    record = await pool.fetchrow(
        "SELECT *, extract(epoch FROM next_attempt_at - updated_at)::float8 AS due_in_s "
        "FROM pending_notifications WHERE id = $1",
        row_id,
    )
    assert record is not None
    return record


async def queue_entries(pool: asyncpg.Pool, row_id: int) -> list[asyncpg.Record]:
    """The row's retry-queue entries, oldest first."""
    return await pool.fetch(
        "SELECT * FROM notification_retry_queue WHERE notification_id = $1 ORDER BY id", row_id
    )


async def make_due(pool: asyncpg.Pool, row_id: int) -> None:
    """Let the clock pass the row's next attempt (set it to the database's now), and the
    retry-queue entry with it, instead of waiting minutes of backoff in a test."""
    await pool.execute(
        "UPDATE pending_notifications SET next_attempt_at = now() WHERE id = $1", row_id
    )
    await pool.execute(
        "UPDATE notification_retry_queue SET retry_at = now() "
        "WHERE notification_id = $1 AND status = 'waiting'",
        row_id,
    )


@asynccontextmanager
async def _connection(db: asyncpg.Pool | asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            yield conn
    else:
        yield db
