"""The instance heartbeat (``bot_instances``): live instances are counted, a silent one stops
counting after three heartbeats and its row goes, a graceful stop leaves at once."""

from __future__ import annotations

import asyncpg

from database import instances


async def test_live_instances_are_counted_and_dead_ones_forgotten(pool: asyncpg.Pool) -> None:
    assert await instances.beat(pool, "a", "webhook", stale_after_s=30) == 1
    assert await instances.beat(pool, "b", "webhook", stale_after_s=30) == 2
    assert await instances.beat(pool, "a", "webhook", stale_after_s=30) == 2  # a beat again
    # c stopped beating a minute ago: not counted, and its row is removed by the next beat
    await pool.execute(
        "INSERT INTO bot_instances (instance_id, mode, last_seen_at) "
        "VALUES ('c', 'webhook', now() - interval '1 minute')"
    )
    assert await instances.beat(pool, "b", "webhook", stale_after_s=30) == 2
    assert [r["instance_id"] for r in await instances.live(pool, 30)] == ["a", "b"]
    assert await pool.fetchval("SELECT count(*) FROM bot_instances WHERE instance_id = 'c'") == 0

    await instances.leave(pool, "a")
    assert await instances.beat(pool, "b", "webhook", stale_after_s=30) == 1
