"""SIGTERM: the instance stops taking updates, lets the update in flight finish, releases
the notifications it could not send in time (without waiting for their lease) and cancels
its stalled job run; another instance then delivers everything. Nothing is lost."""

from __future__ import annotations

import asyncio
import collections
import re
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import pytest
import pytest_asyncio

from database import outbox
from tests.e2e.conftest import StartBot
from tests.e2e.instances import (
    FAST_JOBS,
    Cluster,
    HoldingTelegramAPI,
    Samples,
    eventually,
    free_port,
    metric,
    parse_metrics,
    texts_to,
)
from tests.fakes.telegram_api import DEFAULT_TOKEN, FakeTelegramAPI

pytestmark = pytest.mark.e2e

CHATS = [883_000_000 + n for n in range(10)]
IN_FLIGHT_USER = 884_000_001  # whose /start is being answered when SIGTERM comes
LATE_USER = 884_000_002  # whose /start arrives after SIGTERM
NOTIFICATIONS = 60
BATCH = 20
SETTINGS = {
    **FAST_JOBS,
    "NOTIFICATION_BATCH_SIZE": str(BATCH),
    # far longer than the test: rows are sent again only because they were released
    "NOTIFICATION_LEASE_S": "600",
    "SHUTDOWN_GRACE_S": "4",
}


@pytest_asyncio.fixture
async def stalled_api() -> AsyncIterator[HoldingTelegramAPI]:
    """The first instance's Bot API: sendMessage hangs for the notification chats and for
    the in-flight user until the test says otherwise."""
    api = HoldingTelegramAPI(token=DEFAULT_TOKEN)
    for chat_id in CHATS:
        api.add_user(chat_id, f"Chat {chat_id}")
    api.held_chats.update([*CHATS, IN_FLIGHT_USER])
    await api.start()
    try:
        yield api
    finally:
        for chat_id in CHATS:
            api.fail(chat_id)
        await api.stop()


async def test_sigterm_finishes_or_releases_in_flight_work(
    stalled_api: HoldingTelegramAPI,
    fake_api: FakeTelegramAPI,
    cluster: Cluster,
    db: asyncpg.Pool,
) -> None:
    first = await cluster.start("a", stalled_api, **SETTINGS)
    async with db.acquire() as conn, conn.transaction():
        for n in range(NOTIFICATIONS):
            await outbox.enqueue(
                conn,
                idempotency_key=f"term:{n}",
                chat_id=CHATS[n % len(CHATS)],
                template_key="admin.text",
                params={"text": f"note {n}"},
            )

    # the sender loop and the retry job each hold a batch, hanging on Telegram
    async def holding_two_batches() -> bool:
        claimed = await db.fetchval(
            "SELECT count(*) FROM pending_notifications "
            "WHERE status = 'sending' AND split_part(claimed_by, '#', 1) = 'a'"
        )
        running = await db.fetchval(
            "SELECT count(*) FROM job_runs WHERE job_name = 'retry_notifications' "
            "AND instance_id = 'a' AND status = 'running'"
        )
        return claimed == 2 * BATCH and running == 1

    await eventually(holding_two_batches, what="two claimed batches and a running job")
    # an update is in flight: its handler waits for Telegram to take the reply
    in_flight = stalled_api.push_message(IN_FLIGHT_USER, "/start")
    assert await first.post_update(in_flight) == 200
    await eventually(lambda: stalled_api.waiting[IN_FLIGHT_USER] == 1, what="reply in flight")

    first.terminate()
    # it stops taking updates: not ready, and a new update is refused for redelivery
    await eventually(lambda: _status(first, "/readyz", 503), what="readiness turns 503")
    late = stalled_api.push_message(LATE_USER, "/start")
    assert await first.post_update(late) == 503
    # the update in flight finishes
    stalled_api.release(IN_FLIGHT_USER)
    assert await first.wait_exit() == 0

    replies = stalled_api.messages_to(IN_FLIGHT_USER)
    assert len(replies) == 1
    assert replies[0]["text"].startswith("Hello")
    assert not stalled_api.messages_to(LATE_USER)
    taken = {r["update_id"] for r in await db.fetch("SELECT update_id FROM processed_updates")}
    assert taken == {in_flight["update_id"]}
    # the batches it could not send went back to the queue, due now, attempts unchanged
    rows = await db.fetch("SELECT * FROM pending_notifications")
    assert {(r["status"], r["attempts"], r["claimed_by"], r["lease_until"]) for r in rows} == {
        ("pending", 0, None, None)
    }
    released = re.search(r"(\d+) notification\(s\) released", first.log())
    assert released is not None and int(released.group(1)) == 2 * BATCH, first.log()[-2000:]
    job_states = {
        r["status"] for r in await db.fetch("SELECT status FROM job_runs WHERE instance_id = 'a'")
    }
    assert "running" not in job_states
    assert "cancelled" in job_states
    for chat_id in CHATS:
        stalled_api.fail(chat_id)  # what hung never reached Telegram

    # another instance delivers everything at once (no lease to wait for) and gets the
    # refused update again, as Telegram redelivers after a 503
    for chat_id in [*CHATS, LATE_USER]:
        fake_api.add_user(chat_id, f"User {chat_id}")
    second = await cluster.start("b", fake_api, **SETTINGS)
    assert await second.post_update(late) == 200
    await eventually(
        lambda: _sent_is(db, NOTIFICATIONS), within_s=30, what="all notifications sent"
    )
    delivered = texts_to(fake_api, CHATS)
    assert set(delivered) == {f"note {n}" for n in range(NOTIFICATIONS)}
    assert collections.Counter(delivered.values()) == {1: NOTIFICATIONS}
    assert not texts_to(stalled_api, CHATS)
    await eventually(lambda: fake_api.messages_to(LATE_USER), what="late update handled")
    assert fake_api.messages_to(LATE_USER)[0]["text"].startswith("Hello")

    second.terminate()
    assert await second.wait_exit() == 0


async def _status(instance: object, path: str, expected: int) -> bool:
    status, _ = await instance.get(path)  # type: ignore[attr-defined]
    return status == expected


async def _sent_is(db: asyncpg.Pool, expected: int) -> bool:
    sent = await db.fetchval("SELECT count(*) FROM pending_notifications WHERE status = 'sent'")
    return sent == expected


async def test_polling_mode_serves_metrics_and_stops_cleanly_on_sigterm(
    fake_api: FakeTelegramAPI, start_bot: StartBot
) -> None:
    port = free_port()
    bot = await start_bot(HTTP_IN_POLLING="true", WEB_PORT=str(port), INSTANCE_ID="poller")
    fake_api.push_message(886_000_001, "/start")
    await fake_api.wait_for(lambda: fake_api.messages_to(886_000_001), 30)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
            assert response.status == 200

        async def scrape() -> Samples:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                return parse_metrics(await response.text())

        async def handled_counted() -> Samples | None:
            samples = await scrape()
            return samples if metric(samples, "bot_updates_total", outcome="handled") else None

        samples = await eventually(handled_counted, what="the update counted")
    assert metric(samples, "bot_updates_total", outcome="handled") == 1
    assert metric(samples, "bot_instance_info", instance="poller", mode="polling") == 1

    assert await asyncio.to_thread(bot.stop) == 0
    assert "instance poller stopped: 0 update(s) cut short" in bot.log()
