"""The bounded retry queue with its one-time admin alert, the admin operations and cleanup."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest_asyncio

from recovery.actors import Actor
from recovery.notifications import QUEUE_FULL_TEMPLATE, RetryPolicy
from tests.factories import make_user
from tests.fakes.telegram_api import BAD_GATEWAY
from tests.integration.notification_support import (
    Harness,
    enqueue_text,
    make_due,
    open_harness,
    queue_entries,
    row,
)

ADMIN = Actor(user_id=1, role="admin", telegram_id=1)  # the admin the log names


@pytest_asyncio.fixture
async def harness(pool: asyncpg.Pool) -> AsyncIterator[Harness]:
    async with open_harness(pool) as h:
        yield h


async def _chats(h: Harness, count: int) -> list[int]:
    chats = []
    for _ in range(count):
        user = await make_user(h.pool)
        h.api.add_user(user["telegram_id"], "Client")
        chats.append(user["telegram_id"])
    return chats


async def _alerts(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT * FROM pending_notifications WHERE template_key = $1 ORDER BY id",
        QUEUE_FULL_TEMPLATE,
    )


async def test_past_its_bound_the_retry_queue_dead_letters_and_alerts_admins_once(
    harness: Harness,
) -> None:
    admin = await make_user(harness.pool, role="admin")
    harness.api.add_user(admin["telegram_id"], "Admin")
    chats = await _chats(harness, 6)
    manager = harness.manager(queue_max_size=2, concurrency=1)
    ids = [await enqueue_text(harness.pool, chat, f"n{i}") for i, chat in enumerate(chats[:3])]
    harness.api.fail_next("sendMessage", **BAD_GATEWAY, times=3)

    await manager.drain_once()

    states = [(await row(harness.pool, i))["status"] for i in ids]
    assert states == ["retrying", "retrying", "dead"]
    assert (await row(harness.pool, ids[2]))["dead_reason"] == "queue full"
    assert await manager.queue_depth() == 2
    [alert] = await _alerts(harness.pool)
    assert (alert["chat_id"], alert["recipient_id"]) == (admin["telegram_id"], admin["id"])
    assert (alert["params"]["size"], alert["params"]["limit"]) == (2, 2)

    # a retry of a row already in the queue is not a new entry: it stays in the queue
    await make_due(harness.pool, ids[0])
    harness.api.fail_next("sendMessage", **BAD_GATEWAY, chat_id=chats[0])
    await manager.drain_once()
    kept = await row(harness.pool, ids[0])
    assert (kept["status"], kept["attempts"]) == ("retrying", 2)

    # a new failure while still full: dead-lettered, no second alert
    fourth = await enqueue_text(harness.pool, chats[3], "n3")
    harness.api.fail_next("sendMessage", **BAD_GATEWAY, chat_id=chats[3])
    await manager.drain_once()  # also delivers the alert to the admin
    assert (await row(harness.pool, fourth))["dead_reason"] == "queue full"
    assert len(await _alerts(harness.pool)) == 1

    # the queue drains (an admin discards both); the episode ends; the next crossing alerts
    assert await manager.discard(ids[0]) and await manager.discard(ids[1])
    assert await manager.queue_depth() == 0
    assert await manager.end_queue_full_episode() is True
    more = [await enqueue_text(harness.pool, chat, f"m{i}") for i, chat in enumerate(chats[3:])]
    for chat in chats[3:]:
        harness.api.fail_next("sendMessage", **BAD_GATEWAY, chat_id=chat)
    await manager.drain_once()
    assert [(await row(harness.pool, i))["status"] for i in more] == ["retrying"] * 2 + ["dead"]
    assert len(await _alerts(harness.pool)) == 2


async def test_admin_operations_count_list_retry_and_discard(harness: Harness) -> None:
    chats = await _chats(harness, 4)
    manager = harness.manager(policy=RetryPolicy(max_attempts=1, base_delay_s=0, max_delay_s=0))
    dead_id = await enqueue_text(harness.pool, chats[0], "dead one")
    other_dead_id = await enqueue_text(harness.pool, chats[1], "dead two")
    sent_id = await enqueue_text(harness.pool, chats[2], "fine")
    for chat in chats[:2]:
        harness.api.fail_next("sendMessage", **BAD_GATEWAY, chat_id=chat)
    await manager.drain_once()
    retrying = harness.manager(policy=RetryPolicy(max_attempts=5, base_delay_s=600))
    failing_id = await enqueue_text(harness.pool, chats[3], "failing")
    harness.api.fail_next("sendMessage", **BAD_GATEWAY, chat_id=chats[3])
    await retrying.drain_once()

    assert await manager.status_counts() == {"dead": 2, "sent": 1, "retrying": 1}
    items, total = await manager.list_failing(limit=2)
    assert total == 3 and len(items) == 2
    everything, _ = await manager.list_failing(limit=10)
    assert {i.id for i in everything} == {dead_id, other_dead_id, failing_id}
    assert all("Bad Gateway" in str(i.last_error) for i in everything)
    page_two, _ = await manager.list_failing(limit=2, offset=2)
    assert {i.id for i in items} | {i.id for i in page_two} == {i.id for i in everything}

    # retry one now: the dead letter is due at once with a fresh budget and gets delivered
    assert await manager.retry_now(dead_id, actor=ADMIN) is True
    requeued = await row(harness.pool, dead_id)
    assert (requeued["status"], requeued["attempts"], requeued["dead_reason"]) == (
        "pending",
        0,
        None,
    )
    assert requeued["due_in_s"] <= 0
    await manager.drain_once()
    assert (await row(harness.pool, dead_id))["status"] == "sent"
    assert harness.texts_to(chats[0]) == ["dead one"]

    # a sent row can be neither retried nor discarded
    assert await manager.retry_now(sent_id) is False
    assert await manager.discard(sent_id) is False

    # discard one: final, its waiting retry-queue entry cancelled
    assert await manager.discard(failing_id, actor=ADMIN) is True
    assert (await row(harness.pool, failing_id))["status"] == "discarded"
    assert [e["status"] for e in await queue_entries(harness.pool, failing_id)] == ["cancelled"]

    # retry all now: the remaining dead letter
    assert await manager.retry_all_now(actor=ADMIN) == 1
    await manager.drain_once()
    assert await manager.status_counts() == {"sent": 3, "discarded": 1}


async def test_cleanup_removes_old_delivered_discarded_and_skipped_rows_only(
    harness: Harness,
) -> None:
    chats = await _chats(harness, 1)
    ids = {
        status: await enqueue_text(harness.pool, chats[0], status)
        for status in ("sent", "discarded", "skipped", "dead", "retrying", "recent")
    }
    for status, row_id in ids.items():
        await harness.pool.execute(
            "UPDATE pending_notifications SET status = $2, "
            "updated_at = now() - make_interval(days => $3) WHERE id = $1",
            row_id,
            "sent" if status == "recent" else status,
            1 if status == "recent" else 15,
        )
    await harness.pool.execute(
        "INSERT INTO notification_retry_queue (notification_id, attempt, retry_at, status) "
        "VALUES ($1, 1, now(), 'done')",
        ids["sent"],
    )

    removed = await harness.manager().cleanup(retention_days=14)

    assert removed == 3
    left = {r["id"] for r in await harness.pool.fetch("SELECT id FROM pending_notifications")}
    assert left == {ids["dead"], ids["retrying"], ids["recent"]}
    assert await harness.pool.fetchval("SELECT count(*) FROM notification_retry_queue") == 0
