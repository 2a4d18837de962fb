"""Delivery guarantees: no row lost when a sender dies, none sent twice by two live senders,
new rows sent promptly after their commit (LISTEN/NOTIFY), claims given back on a stop."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from recovery.notifications import NotificationRetryManager
from tests.integration.notification_support import Harness, enqueue_text, open_harness


@pytest_asyncio.fixture
async def harness(pool: asyncpg.Pool) -> AsyncIterator[Harness]:
    async with open_harness(pool) as h:
        yield h


def _register(h: Harness, count: int, first: int = 90_000_001) -> list[int]:
    chats = list(range(first, first + count))
    for chat in chats:
        h.api.add_user(chat, f"User{chat}")
    return chats


async def _not_sent(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM pending_notifications WHERE status <> 'sent'")


async def _until_leases_expired(pool: asyncpg.Pool) -> None:
    """Return once no lease is alive on the database's clock (polls; no timing assumed)."""
    for _ in range(600):
        alive = await pool.fetchval(
            "SELECT count(*) FROM pending_notifications "
            "WHERE status = 'sending' AND lease_until >= now()"
        )
        if not alive:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("leases did not expire")


async def _drain_until_all_sent(
    pool: asyncpg.Pool, manager: NotificationRetryManager, *, streaming: bool = False
) -> int:
    """Drain until every row is sent (another sender may still hold some); returns claims.
    ``streaming``: the run loop's path (next batch claimed while one is in flight)."""
    claimed = 0
    while True:
        if streaming:
            result = await manager.drain(max_batches=1000)
        else:
            result = await manager.drain_once()
        claimed += result.claimed
        if result.claimed == 0:
            if await _not_sent(pool) == 0:
                return claimed
            await asyncio.sleep(0.05)


async def test_rows_of_a_sender_that_died_are_delivered_after_the_lease_none_lost(
    harness: Harness,
) -> None:
    chats = _register(harness, 20)
    texts = [f"crash-{i}" for i in range(20)]
    for chat, text in zip(chats, texts, strict=True):
        await enqueue_text(harness.pool, chat, text)
    accepted: list[str] = []  # texts Telegram accepted from the dying sender, in order
    hang = asyncio.Event()  # never set: the sender freezes after Telegram accepted a message

    async def send_then_die(chat_id: int, text: str) -> int | None:
        message_id = await harness.send(chat_id, text)
        accepted.append(text)
        if len(accepted) > 2:  # the first two are marked sent; then the process "dies"
            await hang.wait()
        return message_id

    dying = harness.manager(sender=send_then_die, lease_s=3.0, send_timeout_s=1.0, concurrency=4)
    crashed = asyncio.create_task(dying.drain_once())
    await harness.api.wait_for(lambda: len(accepted) == 6)  # 2 marked + 4 in flight, then it dies
    crashed.cancel()  # the task dies: nothing releases its lease
    with pytest.raises(asyncio.CancelledError):
        await crashed

    states = Counter(
        r["status"] for r in await harness.pool.fetch("SELECT status FROM pending_notifications")
    )
    assert states == Counter({"sending": 18, "sent": 2})
    sent_but_unmarked = 4

    survivor = harness.manager()
    assert (await survivor.drain_once()).claimed == 0  # the dead sender's lease still holds
    # wait, on the database's clock, until every lease has expired
    await _until_leases_expired(harness.pool)
    claimed = await _drain_until_all_sent(harness.pool, survivor)

    assert claimed == 18
    delivered = Counter(
        str(call.params["text"]) for call in harness.api.calls("sendMessage") if call.ok
    )
    assert set(delivered) == set(texts)  # no row lost
    duplicates = sum(count - 1 for count in delivered.values())
    print(f"\ncrash test: 20 rows, {duplicates} delivered twice (sent, then the sender died)")
    # at least once: exactly the messages Telegram accepted before the crash but that were
    # never marked sent are delivered again; nothing else is
    assert duplicates == sent_but_unmarked
    assert {text for text, count in delivered.items() if count > 1} == set(accepted[2:])
    assert await _not_sent(harness.pool) == 0


async def test_two_senders_at_once_deliver_1000_rows_each_exactly_once(harness: Harness) -> None:
    chats = _register(harness, 100)
    texts = [f"row-{i}" for i in range(1000)]
    async with harness.pool.acquire() as conn, conn.transaction():
        for i, text in enumerate(texts):
            await enqueue_text(conn, chats[i % 100], text)
    first = harness.manager(instance_id="sender-a", batch_size=50, concurrency=8)
    second = harness.manager(instance_id="sender-b", batch_size=50, concurrency=8)

    claims = await asyncio.gather(
        _drain_until_all_sent(harness.pool, first, streaming=True),
        _drain_until_all_sent(harness.pool, second),
    )

    print(f"\ntwo senders: {claims[0]} and {claims[1]} of 1000 rows")
    assert sum(claims) == 1000
    delivered = Counter(
        str(call.params["text"]) for call in harness.api.calls("sendMessage") if call.ok
    )
    assert len(harness.api.calls("sendMessage")) == 1000
    assert delivered == Counter(texts)  # every row once, none twice
    assert await _not_sent(harness.pool) == 0
    ids = await harness.pool.fetch("SELECT telegram_message_id FROM pending_notifications")
    assert all(r["telegram_message_id"] is not None for r in ids)


async def test_run_sends_a_new_notification_when_its_commit_notifies(harness: Harness) -> None:
    [chat] = _register(harness, 1)
    # the poll would wait an hour: only LISTEN/NOTIFY can wake the loop
    manager = harness.manager(poll_interval_s=3600.0)
    stop = asyncio.Event()
    loop = asyncio.create_task(manager.run(stop))
    try:
        await enqueue_text(harness.pool, chat, "first")
        await harness.api.wait_for(lambda: harness.texts_to(chat) == ["first"])
        # committed after the loop's claim: a running drain cannot have picked it up
        await enqueue_text(harness.pool, chat, "second")
        await harness.api.wait_for(lambda: harness.texts_to(chat) == ["first", "second"])
    finally:
        stop.set()
        await asyncio.wait_for(loop, timeout=30)
    assert await _not_sent(harness.pool) == 0


async def test_release_claims_gives_rows_back_at_once_on_a_graceful_stop(
    harness: Harness,
) -> None:
    chats = _register(harness, 3)
    for chat in chats:
        await enqueue_text(harness.pool, chat, "stop")
    blocked = asyncio.Event()

    async def never_answers(chat_id: int, text: str) -> int | None:
        blocked.set()
        await asyncio.Event().wait()
        return None

    stopping = harness.manager(sender=never_answers, lease_s=600.0)
    task = asyncio.create_task(stopping.drain_once())
    await asyncio.wait_for(blocked.wait(), timeout=30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert await stopping.release_claims() == 3
    result = await harness.manager().drain_once()
    assert (result.claimed, result.sent) == (3, 3)
