"""The database goes away while the sender drains the outbox (behind a TCP proxy that cuts
every connection): rows already delivered keep their 'sent' marks in memory and get them
when it answers, claimed rows not yet sent wait for their lease, and no notification is
sent twice."""

from __future__ import annotations

import asyncio
import collections
import contextlib

import asyncpg

from bot.i18n import create_i18n
from bot.notification_texts import make_renderer
from database import outbox
from database.pool import create_pool
from recovery.notifications import NotificationRetryManager
from recovery.rate_limit import TelegramRateLimiter
from tests.integration.commit_cut_proxy import OutageProxy

ROWS = 60
CUT_AFTER = 5  # the database goes away while the fifth notification is being sent


async def test_no_notification_is_sent_twice_across_a_database_outage(
    proxy: OutageProxy, pool: asyncpg.Pool
) -> None:
    async with pool.acquire() as conn, conn.transaction():
        for n in range(ROWS):
            await outbox.enqueue(
                conn, idempotency_key=f"outage-{n}", chat_id=9_100_000 + n,
                template_key="admin.text", params={"text": f"row {n}"},
            )  # fmt: skip
    sent: collections.Counter[int] = collections.Counter()

    async def send(chat_id: int, text: str) -> int:
        await asyncio.sleep(0.1)  # Telegram's answer: 40 sends/s with 4 in flight
        sent[chat_id] += 1
        if sum(sent.values()) == CUT_AFTER:
            await proxy.down()
        return sum(sent.values())

    through_proxy = await create_pool(proxy.dsn, min_size=1, max_size=4)
    manager = NotificationRetryManager(
        through_proxy, sender=send, renderer=make_renderer(create_i18n("en")),
        rate_limiter=TelegramRateLimiter(enabled=False), lease_s=2.0, send_timeout_s=1.0,
        batch_size=20, concurrency=4, instance_id="outage-sender",
    )  # fmt: skip
    try:
        with contextlib.suppress(Exception):
            await manager.drain_once()
        during = sum(sent.values())
        # the first group of marks fails within its 0.2 s: the rows claimed after it
        # (20 in the batch) are not sent while their marks cannot be written
        assert CUT_AFTER <= during < 20, during
        assert manager._marker.held > 0
        with contextlib.suppress(Exception):
            await manager.drain_once()  # still away: claims nothing, sends nothing
        assert sum(sent.values()) == during

        proxy.up()
        await asyncio.sleep(2.5)  # the lease of the rows claimed but not sent runs out
        for _ in range(10):
            await manager.drain(max_batches=10)
            if (
                await pool.fetchval(
                    "SELECT count(*) FROM pending_notifications WHERE status <> 'sent'"
                )
                == 0
            ):
                break
            await asyncio.sleep(0.5)
    finally:
        await through_proxy.close()
    assert manager._marker.held == 0
    assert len(sent) == ROWS and set(sent.values()) == {1}, sent.most_common(3)
    statuses = await pool.fetch(
        "SELECT status, attempts, count(*) AS n FROM pending_notifications GROUP BY 1, 2"
    )
    assert [(r["status"], r["attempts"], r["n"]) for r in statuses] == [("sent", 1, ROWS)]
