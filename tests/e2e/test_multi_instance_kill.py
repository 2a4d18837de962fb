"""An instance killed with SIGKILL mid-job: the other instance takes over the job and, once
their lease has expired, the notifications the dead one had claimed.

Both instances start against a Bot API whose ``sendMessage`` hangs (a stalled Telegram), so
each holds the batch its sender loop claimed, and the one that won the retry job holds the
job's advisory lock and the batch the job claimed. That one is killed; then the survivor's
Telegram recovers.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from database import outbox
from database.pool import create_pool
from tests.e2e.instances import FAST_JOBS, Cluster, HoldingTelegramAPI, eventually, texts_to
from tests.fakes.telegram_api import DEFAULT_TOKEN

pytestmark = pytest.mark.e2e

CHATS = [882_000_000 + n for n in range(10)]
NOTIFICATIONS = 100
BATCH = 20
# the instance behind a claim (a claim id may carry a suffix after '#')
INSTANCE = "split_part(claimed_by, '#', 1)"
LEASE_S = 12  # a send times out after half of it (NOTIFICATION_SEND_TIMEOUT_S cap)
SETTINGS = {
    **FAST_JOBS,
    "NOTIFICATION_LEASE_S": str(LEASE_S),
    "NOTIFICATION_BATCH_SIZE": str(BATCH),
    "RATE_GLOBAL_PER_S": "100000",
    "RATE_PER_CHAT_PER_S": "100000",
}


@pytest_asyncio.fixture
async def stalled_apis() -> AsyncIterator[dict[str, HoldingTelegramAPI]]:
    """One Bot API per instance ("a", "b"), each hanging sendMessage for every chat."""
    apis = {name: HoldingTelegramAPI(token=DEFAULT_TOKEN) for name in ("a", "b")}
    for api in apis.values():
        for chat_id in CHATS:
            api.add_user(chat_id, f"Chat {chat_id}")
        api.held_chats.update(CHATS)
        await api.start()
    try:
        yield apis
    finally:
        for api in apis.values():
            for chat_id in CHATS:
                api.fail(chat_id)
            await api.stop()


async def test_survivor_takes_over_the_job_and_the_dead_instances_claims(
    stalled_apis: dict[str, HoldingTelegramAPI], cluster: Cluster, database_url: str
) -> None:
    db = await create_pool(database_url, min_size=1, max_size=4)
    try:
        await _run(stalled_apis, cluster, db)
    finally:
        await db.close()


async def _run(apis: dict[str, HoldingTelegramAPI], cluster: Cluster, db: asyncpg.Pool) -> None:
    instances = {
        i.name: i
        for i in await asyncio.gather(
            *(cluster.start(name, api, **SETTINGS) for name, api in apis.items())
        )
    }
    async with db.acquire() as conn, conn.transaction():
        for n in range(NOTIFICATIONS):
            await outbox.enqueue(
                conn,
                idempotency_key=f"kill:{n}",
                chat_id=CHATS[n % len(CHATS)],
                template_key="admin.text",
                params={"text": f"note {n}"},
            )

    # each sender loop claims a batch and hangs; the retry job's winner claims another
    async def someone_is_stuck_mid_job() -> str | None:
        runner = await db.fetchval(
            "SELECT instance_id FROM job_runs "
            "WHERE job_name = 'retry_notifications' AND status = 'running'"
        )
        claims = dict(
            await db.fetch(
                f"SELECT {INSTANCE}, count(*) FROM pending_notifications "
                "WHERE status = 'sending' GROUP BY 1"
            )
        )
        if runner is not None and claims == {runner: 2 * BATCH} | _other(runner, BATCH):
            return runner
        return None

    doomed = await eventually(someone_is_stuck_mid_job, what="a batch per loop and the job's")
    survivor = _other_name(doomed)
    held = await db.fetch(
        f"SELECT id, lease_until FROM pending_notifications WHERE {INSTANCE} = $1", doomed
    )
    lease_ends = {row["id"]: row["lease_until"] for row in held}
    doomed_run = await db.fetchrow(
        "SELECT * FROM job_runs WHERE job_name = 'retry_notifications' AND status = 'running'"
    )

    instances[doomed].kill()
    for chat_id in CHATS:  # the survivor's Telegram recovers
        apis[survivor].release(chat_id)
    await eventually(lambda: _sent_is(db, NOTIFICATIONS), within_s=60, what="all sent")

    # every notification reached Telegram exactly once, all of them from the survivor
    delivered = texts_to(apis[survivor], CHATS)
    assert set(delivered) == {f"note {n}" for n in range(NOTIFICATIONS)}
    assert collections.Counter(delivered.values()) == {1: NOTIFICATIONS}
    assert not texts_to(apis[doomed], CHATS)
    # the dead instance's claims were taken over only after their lease
    rows = await db.fetch(
        "SELECT id, sent_at, attempts FROM pending_notifications WHERE id = ANY($1::bigint[])",
        list(lease_ends),
    )
    assert len(rows) == 2 * BATCH
    for row in rows:
        assert row["sent_at"] >= lease_ends[row["id"]], row
        assert row["attempts"] == 1
    # its job run was abandoned by the survivor, which then ran the job itself
    runs = await db.fetch(
        "SELECT * FROM job_runs WHERE job_name = 'retry_notifications' ORDER BY id"
    )
    abandoned = next(r for r in runs if r["id"] == doomed_run["id"])
    assert abandoned["status"] == "abandoned"
    assert f"instance {doomed} stopped" in abandoned["error"]
    after = [r for r in runs if r["id"] > doomed_run["id"]]
    assert after, "nobody ran the job after the instance died"
    assert {r["instance_id"] for r in after} == {survivor}
    assert all(r["status"] == "ok" for r in after)
    assert after[0]["started_at"] >= abandoned["finished_at"]

    instances[survivor].terminate()
    assert await instances[survivor].wait_exit() == 0


def _other_name(name: str) -> str:
    return "b" if name == "a" else "a"


def _other(name: str, count: int) -> dict[str, int]:
    return {_other_name(name): count}


async def _sent_is(db: asyncpg.Pool, expected: int) -> bool:
    sent = await db.fetchval("SELECT count(*) FROM pending_notifications WHERE status = 'sent'")
    return sent == expected
