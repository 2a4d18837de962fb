"""Two bot processes in webhook mode on one database, as behind a load balancer.

Updates posted to either instance (some delivered twice, to both, as Telegram does when it
did not get an answer) are handled once; 1,000 notifications are delivered once each, by
both instances; every periodic job runs once per interval though both instances fire it.
"""

from __future__ import annotations

import asyncio
import collections

import asyncpg
import pytest

from database import outbox
from tests.e2e.instances import FAST_JOBS, JOB_NAMES, Cluster, eventually, metric, texts_to
from tests.fakes.telegram_api import FakeTelegramAPI

pytestmark = pytest.mark.e2e

USERS = [880_000_000 + n for n in range(30)]
CHATS = [881_000_000 + n for n in range(40)]
NOTIFICATIONS = 1000
# high enough that Telegram's real limits (30/s, 1/s per chat) do not slow the test
FAST_SENDING = {
    "RATE_GLOBAL_PER_S": "100000",
    "RATE_PER_CHAT_PER_S": "100000",
    "RATE_PER_GROUP_PER_MIN": "100000",
    "NOTIFICATION_BATCH_SIZE": "50",
}


async def test_two_instances_share_updates_notifications_and_jobs(
    fake_api: FakeTelegramAPI, cluster: Cluster, db: asyncpg.Pool
) -> None:
    a, b = await asyncio.gather(
        cluster.start("a", fake_api, **FAST_JOBS, **FAST_SENDING),
        cluster.start("b", fake_api, **FAST_JOBS, **FAST_SENDING),
    )
    instances = [a, b]

    # --- updates: each user's /start goes to one instance; every third one also reaches
    # the other instance (a redelivery); a forged one without the secret is refused
    posts = []
    for n, user_id in enumerate(USERS):
        update = fake_api.push_message(user_id, "/start")
        posts.append(instances[n % 2].post_update(update))
        if n % 3 == 0:
            posts.append(instances[(n + 1) % 2].post_update(update))
    assert set(await asyncio.gather(*posts)) == {200}
    redelivered = len(range(0, len(USERS), 3))
    forger = 889_000_001
    assert await a.post_update(fake_api.push_message(forger, "/start"), secret="wrong") == 401

    async def update_counts() -> tuple[float, float]:
        samples = [await i.metrics() for i in instances]
        handled = sum(metric(s, "bot_updates_total", outcome="handled") for s in samples)
        duplicates = sum(metric(s, "bot_updates_total", outcome="duplicate") for s in samples)
        return handled, duplicates

    await eventually(
        lambda: _equals(update_counts(), (len(USERS), redelivered)), what="updates handled"
    )
    for user_id in USERS:
        replies = fake_api.messages_to(user_id)
        assert len(replies) == 1, (user_id, replies)
        assert replies[0]["text"].startswith("Hello")
    assert not fake_api.messages_to(forger)
    taken = await db.fetch("SELECT update_id, instance_id FROM processed_updates")
    assert len(taken) == len(USERS)
    assert {row["instance_id"] for row in taken} == {"a", "b"}
    assert await db.fetchval(
        "SELECT count(*) FROM users WHERE telegram_id = ANY($1::bigint[])", USERS
    ) == len(USERS)
    assert not await db.fetchval("SELECT count(*) FROM users WHERE telegram_id = $1", forger)

    # --- 1,000 notifications committed at once; both instances' senders take them
    for chat_id in CHATS:
        fake_api.add_user(chat_id, f"Chat {chat_id}")
    async with db.acquire() as conn, conn.transaction():
        for n in range(NOTIFICATIONS):
            await outbox.enqueue(
                conn,
                idempotency_key=f"multi:{n}",
                chat_id=CHATS[n % len(CHATS)],
                template_key="admin.text",
                params={"text": f"note {n}"},
            )
    await eventually(
        lambda: _equals(
            db.fetchval("SELECT count(*) FROM pending_notifications WHERE status = 'sent'"),
            NOTIFICATIONS,
        ),
        within_s=90,
        what="all notifications sent",
    )
    delivered = texts_to(fake_api, CHATS)
    assert sum(delivered.values()) == NOTIFICATIONS
    assert set(delivered) == {f"note {n}" for n in range(NOTIFICATIONS)}
    assert collections.Counter(delivered.values()) == {1: NOTIFICATIONS}  # no duplicates
    sent_by = [metric(await i.metrics(), "bot_notifications_total", outcome="sent") for i in
               instances]  # fmt: skip
    assert sum(sent_by) == NOTIFICATIONS
    assert all(count > 0 for count in sent_by), sent_by

    # --- periodic jobs: both instances fire each job every second; each second's slot
    # has one run
    async def runs_per_job() -> dict[str, int]:
        rows = await db.fetch(
            "SELECT job_name, count(*) AS n FROM job_runs WHERE status = 'ok' GROUP BY job_name"
        )
        return {row["job_name"]: row["n"] for row in rows}

    await eventually(
        lambda: _all_at_least(runs_per_job(), JOB_NAMES, 3), within_s=60, what="3 runs per job"
    )
    samples = [await i.metrics() for i in instances]
    runs = await db.fetch("SELECT * FROM job_runs ORDER BY id")
    for job in JOB_NAMES:
        done = [r for r in runs if r["job_name"] == job and r["status"] in ("ok", "failed")]
        slots = [r["slot_start"] for r in done]
        assert len(slots) == len(set(slots)), f"{job} ran twice in one interval"
        assert all(r["status"] == "ok" for r in done), [r["error"] for r in done]
        assert all(r["interval_s"] == 1 for r in done)
        turned_away = sum(
            metric(s, "bot_job_runs_total", job=job, outcome=outcome)
            for s in samples
            for outcome in ("skipped_locked", "skipped_done")
        )
        assert turned_away > 0, f"only one instance fired {job}"
    assert not [r for r in runs if r["status"] == "abandoned"]
    assert not await db.fetchval("SELECT count(*) FROM error_records")

    # both stop gracefully
    for instance in instances:
        instance.terminate()
    assert [await i.wait_exit() for i in instances] == [0, 0]


async def _equals(value: object, expected: object) -> bool:
    return (await value) == expected  # type: ignore[misc]


async def _all_at_least(counts: object, names: tuple[str, ...], least: int) -> bool:
    values = await counts  # type: ignore[misc]
    return all(values.get(name, 0) >= least for name in names)
