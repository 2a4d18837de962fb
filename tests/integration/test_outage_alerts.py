"""One alert per outage: two instances that both saw the database go away raise one alert
between them (the second is counted as its duplicate), through the admin alert path and the
outbox. The watch notices every return of Telegram, even one followed at once by a failure."""

from __future__ import annotations

import asyncpg

from recovery.alerts import AdminAlerts
from recovery.outages import OutageTracker, OutageWatch


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _tracker_after_outage(start: float, seconds: float) -> OutageTracker:
    clock = Clock(start)
    tracker = OutageTracker("database", 5.0, clock=clock)
    tracker.failure()
    clock.now += seconds
    assert tracker.success() is not None
    return tracker


async def test_two_instances_raise_one_alert_for_one_outage(pool: asyncpg.Pool) -> None:
    alerts = AdminAlerts(pool, admin_ids=[42])
    first = OutageWatch(pool, alerts, _tracker_after_outage(1_800_000_000.0, 20))
    second = OutageWatch(pool, alerts, _tracker_after_outage(1_800_000_001.0, 19))
    assert await first.report() == 1
    assert await second.report() == 1
    assert first.database.finished == [] and second.database.finished == []
    sent = await pool.fetch(
        "SELECT params FROM pending_notifications WHERE template_key = 'admin.outage_database'"
    )
    assert len(sent) == 1
    assert sent[0]["params"]["seconds"] == 20
    row = await pool.fetchrow("SELECT duplicates FROM admin_alerts WHERE dedupe_key = $1",
                              "outage:database")  # fmt: skip
    assert row["duplicates"] == 1


async def test_a_second_outage_after_the_first_one_gets_its_own_alert(pool: asyncpg.Pool) -> None:
    alerts = AdminAlerts(pool, admin_ids=[42])  # the general dedupe window: 30 min
    watch = OutageWatch(pool, alerts, _tracker_after_outage(1_800_000_000.0, 20))
    assert await watch.report() == 1
    # the first alert was raised two minutes ago; the database was away again meanwhile
    await pool.execute("UPDATE admin_alerts SET created_at = created_at - interval '2 minutes'")
    again = OutageWatch(pool, alerts, _tracker_after_outage(1_800_000_100.0, 15))
    assert await again.report() == 1
    rows = await pool.fetch(
        "SELECT params ->> 'seconds' AS seconds, duplicates FROM admin_alerts"
        " WHERE dedupe_key = 'outage:database' ORDER BY id"
    )
    assert [(r["seconds"], r["duplicates"]) for r in rows] == [("20", 0), ("15", 0)]
    sent = await pool.fetchval(
        "SELECT count(*) FROM pending_notifications WHERE template_key = 'admin.outage_database'"
    )
    assert sent == 2


async def test_the_watch_notices_each_return_of_telegram_and_not_its_flaps(
    pool: asyncpg.Pool,
) -> None:
    clock = Clock(1_800_000_000.0)
    telegram = OutageTracker("telegram", 3.0, clock=clock)
    backs: list[str] = []
    watch = OutageWatch(
        pool, AdminAlerts(pool, admin_ids=[42]), OutageTracker("database", 5.0), telegram,
        on_back=backs.append,
    )  # fmt: skip
    await watch.tick()
    assert backs == []  # no answer from Telegram yet
    telegram.success()
    await watch.tick()
    assert backs == ["telegram"]  # its first answer: what died before the start comes back
    await watch.tick()
    for _ in range(3):  # flaps: getUpdates answers while sendMessage fails
        telegram.failure()
        clock.now += 1
        telegram.success()
        await watch.tick()
    assert backs == ["telegram"]
    telegram.failure()
    clock.now += 10
    telegram.success()
    telegram.failure()  # back and down again between two ticks (a late send failing)
    await watch.tick()
    assert backs == ["telegram", "telegram"]
    await watch.tick()
    assert backs == ["telegram", "telegram"]
