"""Telegram's sending limits held in Redis, so that every instance of the bot shares them.

Telegram's limits are per bot (https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this):
about 30 messages per second overall, one per second in a chat, 20 per minute in a group.
``RedisRateLimiter`` keeps the same sliding windows as the in-process
``recovery.rate_limit.TelegramRateLimiter`` (at most ``limit`` grants in any window of
``period`` seconds, the global one smoothed, every window lengthened by the jitter margin),
but in Redis, where one Lua script checks and takes every window of a send atomically.

Why one Lua script and not the ``limits`` library (its moving-window strategy on Redis):

- one send needs up to three windows (global, chat, group) taken together or not at all;
  ``limits`` takes one key per call, so a send refused by its chat after the global window
  was taken has spent a global slot for nothing, and two instances can interleave between
  the calls;
- the script answers how long to wait (to the microsecond, on Redis's clock), so a waiter
  sleeps once instead of polling; ``limits`` answers yes or no and a reset time;
- the script reads the time from Redis (``TIME``): one clock for every instance. ``limits``
  stamps entries with each client's own clock, so instances whose clocks differ disagree
  about the window;
- it is one round trip per grant. ``bench/bench_shared_rate_limit.py`` measures both on
  three processes sharing one Redis (``bench/results/shared_rate_limit.md``).

Keys, all in one Redis Cluster hash slot (the braces), under ``<prefix>:rl:<scope>`` where
the scope is the bot's id (two bots on one Redis do not share limits):
``{...}:g`` the global window, ``{...}:c:<chat id>`` a chat's, ``{...}:grp:<chat id>`` a
group's (lists of grant times in microseconds, newest first, trimmed to the limit and
expiring with the window), ``{...}:pause`` the end of a 429 pause.

When Redis does not answer (connection refused, ``timeout_s`` exceeded) the limiter holds
the limits in this process alone, at ``1/N`` of each rate, ``N`` being the number of live
instances (``set_live_instances``, fed by the heartbeat in ``bot_instances``), logs it once,
reports it in ``status()`` and tries Redis again every ``probe_interval_s`` seconds
(``probe``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable
from typing import Any, Protocol

from recovery.rate_limit import Clock, Sleep, SlidingWindow, TelegramRateLimiter

log = logging.getLogger(__name__)

MICROS = 1_000_000

# KEYS[1]: the pause key; KEYS[2..]: windows (lists of grant times in µs, newest first).
# ARGV: three numbers per window: limit, period (µs), smallest gap between grants (µs).
# Returns {1, 0, 0} when granted (recorded in every window), else {0, wait µs, index of the
# key that asked for the longest wait}. Time comes from Redis (TIME): one clock for all.
ACQUIRE_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wait, blocker = 0, 0
local paused = tonumber(redis.call('GET', KEYS[1]) or '0')
if paused - now > wait then wait, blocker = paused - now, 1 end
for i = 2, #KEYS do
  local base = (i - 2) * 3
  local limit, period, gap = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]),
                             tonumber(ARGV[base + 3])
  local oldest = redis.call('LINDEX', KEYS[i], limit - 1)
  if oldest then
    local w = tonumber(oldest) + period - now
    if w > wait then wait, blocker = w, i end
  end
  if gap > 0 then
    local last = redis.call('LINDEX', KEYS[i], 0)
    if last then
      local w = tonumber(last) + gap - now
      if w > wait then wait, blocker = w, i end
    end
  end
end
if wait > 0 then return {0, math.ceil(wait), blocker} end
local stamp = string.format('%.0f', now)
for i = 2, #KEYS do
  local base = (i - 2) * 3
  local limit, period, gap = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]),
                             tonumber(ARGV[base + 3])
  redis.call('LPUSH', KEYS[i], stamp)
  redis.call('LTRIM', KEYS[i], 0, limit - 1)
  redis.call('PEXPIRE', KEYS[i], math.ceil(math.max(period, gap) / 1000) + 1000)
end
return {1, 0, 0}
"""

# KEYS[1]: the pause key; ARGV[1]: pause length in µs. A longer pause in force is kept.
PAUSE_LUA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local length = tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if now + length > current then
  redis.call('SET', KEYS[1], string.format('%.0f', now + length), 'PX',
             math.ceil(length / 1000) + 1000)
end
return 1
"""

_PAUSE, _GLOBAL = 1, 2  # key indexes the script names as the reason to wait


class AsyncScript(Protocol):
    """A registered Lua script of ``redis.asyncio`` (``Redis.register_script``)."""

    def __call__(self, keys: list[str], args: list[Any]) -> Awaitable[Any]: ...


class RedisClient(Protocol):
    """What the limiter needs of ``redis.asyncio.Redis``."""

    def register_script(self, script: str) -> AsyncScript: ...

    def ping(self) -> Awaitable[Any]: ...

    def aclose(self) -> Awaitable[None]: ...


def _spec(window: SlidingWindow) -> list[int]:
    return [window.limit, math.ceil(window.period * MICROS), math.ceil(window.min_gap * MICROS)]


class RedisRateLimiter:
    """Global, per-chat and per-group sliding windows and the 429 pause, in Redis, shared by
    every instance; the in-process limiter at ``1/N`` of the rates while Redis is away.

    Within one process the global window is still taken in arrival order (a FIFO lock), so
    at most one waiter per instance asks Redis at a time; a send held by its own chat (or by
    a pause) leaves that queue and waits outside it.

    Args:
        redis: a ``redis.asyncio.Redis`` client; give it short socket timeouts and no
            retries (``bot.app.create_rate_limiter`` does): a call that fails is the signal
            to fall back.
        scope: what the limits belong to: the bot's id (the token's part before ``:``).
        key_prefix: start of every key (``REDIS_KEY_PREFIX``).
        enabled, global_per_s, per_chat_per_s, per_group_per_min, window_margin_s: as for
            ``TelegramRateLimiter``.
        probe_interval_s: while falling back, seconds between attempts to reach Redis again.
        clock: monotonic seconds; sleep: awaits seconds (tests inject both).

    Raises:
        ValueError: a rate is not positive, or the margin is negative.
    """

    PRUNE_AT = 10_000  # forget expired per-chat hints when there are this many

    def __init__(
        self,
        redis: RedisClient,
        *,
        scope: str,
        key_prefix: str = "fsm",
        enabled: bool = True,
        global_per_s: float = 30.0,
        per_chat_per_s: float = 1.0,
        per_group_per_min: float = 20.0,
        window_margin_s: float = 0.0,
        probe_interval_s: float = 5.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        from redis.exceptions import RedisError

        self._unreachable: tuple[type[BaseException], ...] = (
            RedisError, OSError, asyncio.TimeoutError,
        )  # fmt: skip
        self.redis = redis
        self.enabled = enabled
        self.global_per_s = global_per_s
        self.per_chat_per_s = per_chat_per_s
        self.per_group_per_min = per_group_per_min
        self.window_margin_s = window_margin_s
        self.probe_interval_s = probe_interval_s
        self.clock = clock
        self.sleep = sleep
        base = f"{{{key_prefix}:rl:{scope}}}"
        self.keys_prefix = base
        self._pause_key = f"{base}:pause"
        self._global_key = f"{base}:g"
        self._global = _spec(SlidingWindow.for_rate(global_per_s, 1.0, smooth=True,
                                                    margin=window_margin_s))  # fmt: skip
        self._chat = _spec(SlidingWindow.for_rate(per_chat_per_s, 1.0, margin=window_margin_s))
        self._group = _spec(SlidingWindow.for_rate(per_group_per_min, 60.0, margin=window_margin_s))
        self._acquire_script = redis.register_script(ACQUIRE_LUA)
        self._pause_script = redis.register_script(PAUSE_LUA)
        self._turn = asyncio.Lock()
        self._paused_until = -math.inf  # this process's copy of the pause (clock time)
        self._global_until = -math.inf  # the global window's last known wait (clock time)
        self._chat_until: dict[int, float] = {}  # chats known to be held, until (clock time)
        self._background: set[asyncio.Task[None]] = set()
        self.live_instances = 1
        self.fallback: TelegramRateLimiter | None = None
        self.fallback_since: float | None = None
        self._next_probe = 0.0
        self._probing = False

    # ------------------------------------------------------------------ the protocol
    async def acquire(self, chat_id: int, *, max_wait: float = math.inf) -> bool:
        """Wait until every window allows a send to ``chat_id`` and take them all at once
        (True); False, taking nothing, when that would take longer than ``max_wait``
        seconds. Redis unreachable: the in-process fallback decides."""
        if max_wait < 0:
            return False
        deadline = self.clock() + max_wait
        while True:
            if self.fallback is not None:
                await self.probe()
                fallback = self.fallback
                if fallback is not None:
                    return await fallback.acquire(chat_id, max_wait=deadline - self.clock())
            wait = self._held(chat_id, self.clock())
            if wait > 0:
                if self.clock() + wait > deadline:
                    return False
                await self.sleep(wait)
                continue
            async with self._turn:
                while True:
                    try:
                        granted, wait_us, blocker = await self._try(chat_id)
                    except self._unreachable as exc:
                        self._fall_back(exc)
                        break
                    if granted:
                        return True
                    now = self.clock()
                    wait = wait_us / MICROS
                    if blocker != _GLOBAL:  # the chat, its group or a pause: wait outside
                        until = now + wait
                        if blocker == _PAUSE:
                            self._paused_until = max(self._paused_until, until)
                        else:
                            self._chat_until[chat_id] = until
                        break
                    self._global_until = now + wait
                    if now + wait > deadline:
                        return False
                    await self.sleep(wait)

    def wait_time(self, chat_id: int) -> float:
        """Seconds until a send to ``chat_id`` is expected to be allowed, from what the last
        answers of Redis said (the sender uses it to put a row back)."""
        if self.fallback is not None:
            return self.fallback.wait_time(chat_id)
        now = self.clock()
        return max(0.0, self._held(chat_id, now), self._global_until - now)

    def pause(self, seconds: float) -> None:
        """Hold every send of every instance for ``seconds`` (a 429's ``retry_after``): at
        once in this process, and in Redis in the background (a failure is only logged:
        the PostgreSQL pause of the claims still reaches every instance)."""
        seconds = max(0.0, seconds)
        self._paused_until = max(self._paused_until, self.clock() + seconds)
        if self.fallback is not None:
            self.fallback.pause(seconds)
        task = asyncio.get_running_loop().create_task(self._pause_in_redis(seconds))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def status(self) -> dict[str, object]:
        """``{"backend": "redis", "shared": True, ...}``, or while Redis is away
        ``{"backend": "local", "shared": False, "fallback": True, "reason": "redis
        unreachable", "instances": N, "global_per_s": rate / N}``."""
        if self.fallback is None:
            return {"backend": "redis", "shared": True, "global_per_s": self.global_per_s}
        return {
            "backend": "local",
            "shared": False,
            "fallback": True,
            "reason": "redis unreachable",
            "instances": self.live_instances,
            "global_per_s": self.fallback.global_per_s,
        }

    async def close(self) -> None:
        """Close the Redis client (a pause still being written is given up)."""
        for task in list(self._background):
            task.cancel()
        await self.redis.aclose()

    # ------------------------------------------------------------------ instances
    def set_live_instances(self, count: int) -> None:
        """The number of live instances (at least 1): the fallback's divisor. While falling
        back, a change takes effect at once (new, empty windows at the new rates)."""
        count = max(1, count)
        if count == self.live_instances:
            return
        self.live_instances = count
        if self.fallback is not None:
            paused = self.fallback.pause_remaining()
            self.fallback = self._local(count)
            self.fallback.pause(paused)
            log.warning(
                "rate limits still held by this instance alone: now 1/%d of the configured "
                "rates (%.2f messages/s overall)", count, self.fallback.global_per_s,
            )  # fmt: skip

    # ------------------------------------------------------------------ internals
    def _held(self, chat_id: int, now: float) -> float:
        """Seconds this process already knows a send to ``chat_id`` must wait."""
        return max(0.0, self._paused_until - now, self._chat_until.get(chat_id, now) - now)

    async def _try(self, chat_id: int) -> tuple[bool, int, int]:
        keys = [self._pause_key]
        args: list[int] = []
        if self.enabled:
            keys += [self._global_key, f"{self.keys_prefix}:c:{chat_id}"]
            args += self._global + self._chat
            if chat_id < 0:  # groups, supergroups and channels (TelegramRateLimiter.is_group)
                keys.append(f"{self.keys_prefix}:grp:{chat_id}")
                args += self._group
        granted, wait_us, blocker = await self._acquire_script(keys=keys, args=args)
        if granted:
            self._chat_until.pop(chat_id, None)
            if len(self._chat_until) >= self.PRUNE_AT:
                now = self.clock()
                self._chat_until = {c: u for c, u in self._chat_until.items() if u > now}
        return bool(granted), int(wait_us), int(blocker)

    def _local(self, instances: int) -> TelegramRateLimiter:
        return TelegramRateLimiter(
            enabled=self.enabled,
            global_per_s=self.global_per_s / instances,
            per_chat_per_s=self.per_chat_per_s / instances,
            per_group_per_min=self.per_group_per_min / instances,
            window_margin_s=self.window_margin_s,
            clock=self.clock,
            sleep=self.sleep,
        )

    def _fall_back(self, exc: BaseException) -> None:
        if self.fallback is not None:
            return
        self.fallback = self._local(self.live_instances)
        self.fallback.pause(max(0.0, self._paused_until - self.clock()))
        self.fallback_since = self.clock()
        self._next_probe = self.clock() + self.probe_interval_s
        log.warning(
            "Redis unreachable (%s): Telegram rate limits are held by this instance alone at "
            "1/%d of the configured rates (%.2f messages/s overall) until Redis answers again",
            type(exc).__name__, self.live_instances, self.fallback.global_per_s,
        )  # fmt: skip

    async def probe(self) -> None:
        """While falling back: at most every ``probe_interval_s`` seconds one PING; an
        answer ends the fallback. Called before each send, and by the bot's heartbeat so
        that an idle instance notices too."""
        if self.fallback is None or self._probing or self.clock() < self._next_probe:
            return
        self._probing = True
        try:
            await self.redis.ping()
        except self._unreachable:
            self._next_probe = self.clock() + self.probe_interval_s
            return
        finally:
            self._probing = False
        since = self.fallback_since or self.clock()
        self.fallback, self.fallback_since = None, None
        log.warning(
            "Redis reachable again after %.0f s: rate limits are shared by every instance",
            self.clock() - since,
        )

    async def _pause_in_redis(self, seconds: float) -> None:
        try:
            await self._pause_script(keys=[self._pause_key], args=[math.ceil(seconds * MICROS)])
        except self._unreachable as exc:
            log.warning("could not share a 429 pause through Redis (%s)", type(exc).__name__)
