"""After a Telegram outage the notifications it held back are due at once: 'retrying' rows
now rather than after their backoff, and rows that died of their attempt budget during the
outage with a fresh budget. Rows dead before it, or dead for another reason, stay dead.
Rows that died because Telegram did not answer come back in a process started after the
outage too, for a day."""

from __future__ import annotations

import time

import asyncpg

from database import outbox
from recovery.notification_outcomes import MAX_ATTEMPTS_REASON, TELEGRAM_UNREACHABLE_REASON
from recovery.outages import resume_notifications


async def _row(pool: asyncpg.Pool, key: str, status: str, reason: str | None, age_s: float) -> int:
    async with pool.acquire() as conn:
        row_id = await outbox.enqueue(
            conn, idempotency_key=key, chat_id=42, template_key="admin.text",
            params={"text": key},
        )  # fmt: skip
        await conn.execute(
            "UPDATE pending_notifications SET status = $2, dead_reason = $3, attempts = 5,"
            " next_attempt_at = now() + interval '1 hour',"
            " updated_at = now() - make_interval(secs => $4) WHERE id = $1",
            row_id, status, reason, age_s,
        )  # fmt: skip
    assert row_id is not None
    return row_id


async def test_what_the_outage_held_back_is_due_now(pool: asyncpg.Pool) -> None:
    retrying = await _row(pool, "retrying", "retrying", None, 30)
    died = await _row(pool, "died-during", "dead", MAX_ATTEMPTS_REASON, 30)
    before = await _row(pool, "died-before", "dead", MAX_ATTEMPTS_REASON, 3600)
    full = await _row(pool, "queue-full", "dead", "queue full", 30)

    assert await resume_notifications(pool, time.time() - 120) == 2
    rows = {
        r["id"]: r
        for r in await pool.fetch(
            "SELECT id, status, attempts, next_attempt_at <= now() AS due"
            " FROM pending_notifications"
        )
    }
    assert rows[retrying]["status"] == "retrying" and rows[retrying]["due"]
    assert rows[died]["status"] == "pending" and rows[died]["attempts"] == 0
    assert rows[died]["due"]
    assert rows[before]["status"] == "dead" and rows[full]["status"] == "dead"


async def test_rows_dead_of_an_unreachable_telegram_come_back_in_a_new_process(
    pool: asyncpg.Pool,
) -> None:
    hours_ago = await _row(pool, "unreachable-2h", "dead", TELEGRAM_UNREACHABLE_REASON, 7200)
    too_old = await _row(pool, "unreachable-25h", "dead", TELEGRAM_UNREACHABLE_REASON, 90_000)
    other = await _row(pool, "budget-30s", "dead", MAX_ATTEMPTS_REASON, 30)
    waiting = await _row(pool, "retrying", "retrying", None, 30)
    # a process started after the outage knows no outage of its own: since_epoch is None,
    # and what waits for its backoff keeps waiting
    assert await resume_notifications(pool, None, retrying=False) == 1
    status = dict(await pool.fetch("SELECT id, status FROM pending_notifications"))
    assert status == {hours_ago: "pending", too_old: "dead", other: "dead", waiting: "retrying"}
    assert not await pool.fetchval(
        "SELECT next_attempt_at <= now() FROM pending_notifications WHERE id = $1", waiting
    )
