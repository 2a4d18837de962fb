"""Telegram's limits held in a real Redis by several limiters at once (each one stands for a
bot instance with its own connection): the global and per-chat windows hold across them,
a send refused by its chat takes nothing, a 429 pause reaches every instance, and while
Redis is down each falls back to its own limiter at 1/N of the rate, then shares again."""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from recovery.redis_rate_limit import RedisRateLimiter
from tests.conftest import REDIS_URL, needs_redis
from tests.redis_server import RedisServer

SCOPE = "123456789"


def _client(url: str) -> Redis:
    return Redis.from_url(
        url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )


@pytest_asyncio.fixture
async def limiters(redis_prefix: str) -> AsyncIterator[list[RedisRateLimiter]]:
    """Factory list: three limiters on the machine's Redis, 20/s overall, 1/s per chat."""
    made = [
        RedisRateLimiter(
            _client(REDIS_URL or ""),
            scope=SCOPE,
            key_prefix=redis_prefix,
            global_per_s=20.0,
            window_margin_s=0.05,
        )
        for _ in range(3)
    ]
    yield made
    for limiter in made:
        await limiter.close()


def _most_in_window(times: list[float], window: float = 1.0) -> int:
    """The most instants in any half-open window ``[t, t + window)``."""
    times = sorted(times)
    return max(bisect.bisect_left(times, t + window) - i for i, t in enumerate(times))


@needs_redis
async def test_three_instances_share_the_global_and_the_chat_limits(
    limiters: list[RedisRateLimiter],
) -> None:
    grants: list[tuple[float, int]] = []

    async def instance(limiter: RedisRateLimiter, chats: list[int]) -> None:
        for chat in chats:
            assert await limiter.acquire(chat, max_wait=30)
            grants.append((time.monotonic(), chat))

    # 60 sends over 30 chats: each chat twice, the two sends on different instances
    chats = list(range(1, 31))
    started = time.monotonic()
    await asyncio.gather(
        instance(limiters[0], chats[:15] + chats[15:]),
        instance(limiters[1], chats[15:] + chats[:15]),
        instance(limiters[2], []),
    )
    elapsed = time.monotonic() - started
    times = [t for t, _ in grants]
    assert len(times) == 60
    assert _most_in_window(times) <= 20  # the global limit, across both instances
    for chat in chats:
        first, second = sorted(t for t, c in grants if c == chat)
        assert second - first >= 1.0  # one message a second per chat, across instances
    # 60 sends at 20 per 1.05 s: about 3 s; far more would mean they waited on each other
    assert elapsed < 6


@needs_redis
async def test_a_send_refused_by_its_chat_takes_no_global_slot(
    limiters: list[RedisRateLimiter], redis_prefix: str
) -> None:
    a, b, _ = limiters
    assert await a.acquire(42)
    assert not await b.acquire(42, max_wait=0.2)  # the chat's second within its second
    assert 0.5 < b.wait_time(42) <= 1.05
    redis = _client(REDIS_URL or "")
    try:
        assert await redis.llen(f"{{{redis_prefix}:rl:{SCOPE}}}:g") == 1
    finally:
        await redis.aclose()


@needs_redis
async def test_a_group_gets_the_chat_and_the_group_window(redis_prefix: str) -> None:
    limiter = RedisRateLimiter(
        _client(REDIS_URL or ""), scope=SCOPE, key_prefix=redis_prefix, per_group_per_min=2.0
    )
    try:
        assert await limiter.acquire(-100_1)
        assert await limiter.acquire(-100_1, max_wait=1.5)  # the chat's second has passed
        assert not await limiter.acquire(-100_1, max_wait=2)  # 2 per minute used up
        assert limiter.wait_time(-100_1) > 50
        assert await limiter.acquire(-100_2, max_wait=0.1)  # another group is free
    finally:
        await limiter.close()


@needs_redis
async def test_a_429_pause_holds_every_instance(limiters: list[RedisRateLimiter]) -> None:
    a, b, _ = limiters
    a.pause(0.6)
    await asyncio.sleep(0.05)  # the pause is written to Redis in the background
    started = time.monotonic()
    assert await b.acquire(7, max_wait=5)
    assert time.monotonic() - started >= 0.5


# ----------------------------------------------------------------- Redis going away
async def test_redis_down_falls_back_to_one_nth_and_comes_back(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = RedisRateLimiter(
        _client(own_redis.url), scope=SCOPE, global_per_s=30.0, probe_interval_s=0.5,
        window_margin_s=0.05,  # the grants are timed after acquire returns: some jitter
    )  # fmt: skip
    limiter.set_live_instances(3)
    try:
        assert await limiter.acquire(1)
        assert limiter.status()["backend"] == "redis"

        own_redis.stop()
        caplog.set_level(logging.WARNING, logger="recovery.redis_rate_limit")
        grants: list[float] = []
        for chat in range(100, 130):
            assert await limiter.acquire(chat, max_wait=10)
            grants.append(time.monotonic())
        status = limiter.status()
        assert status == {
            "backend": "local", "shared": False, "fallback": True,
            "reason": "redis unreachable", "instances": 3, "global_per_s": 10.0,
        }  # fmt: skip
        assert _most_in_window(grants) <= 10  # 30/s divided among 3 instances
        assert any("1/3 of the configured rates" in r.getMessage() for r in caplog.records)

        own_redis.start()
        await asyncio.sleep(0.6)  # past the probe interval
        assert await limiter.acquire(999, max_wait=2)
        assert limiter.status()["backend"] == "redis"
        assert any("Redis reachable again" in r.getMessage() for r in caplog.records)
    finally:
        await limiter.close()


async def test_the_heartbeat_probe_brings_an_idle_instance_back(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="recovery.redis_rate_limit")
    limiter = RedisRateLimiter(_client(own_redis.url), scope=SCOPE, probe_interval_s=0.1)
    try:
        await limiter.probe()  # sharing: nothing to do, nothing said
        assert limiter.status()["backend"] == "redis" and not caplog.records
        own_redis.stop()
        assert await limiter.acquire(5, max_wait=1)  # the call fails: it falls back
        assert limiter.status()["backend"] == "local"
        own_redis.start()
        await asyncio.sleep(0.15)
        await limiter.probe()  # what the heartbeat does on an instance with nothing to send
        assert limiter.status()["backend"] == "redis"
        assert [r.getMessage().split(" (")[0] for r in caplog.records][-1].startswith(
            "Redis reachable again"
        )
    finally:
        await limiter.close()
