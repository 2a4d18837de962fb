"""An asyncio rate limiter for Telegram's sending limits (sliding windows, no aiogram).

Limits (https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this):
"avoid sending more than one message per second" in one chat, "not more than 20 messages
per minute to the same group", and "not more than about 30 messages per second" in bulk.
A 429 answer carries ``retry_after``: every send waits that long (``pause``).

Each limit is a sliding window: at most ``limit`` grants in any half-open window of
``period`` seconds, which is the published form of the limits ("N per second / minute") and
what the benchmark checks. Unlike a token bucket of one token (grants spaced exactly
``1 / rate`` apart), a window does not lose throughput when the event loop wakes a waiter a
few milliseconds late: the lateness of one send does not push back every later one. Unlike a
token bucket of N tokens, it never lets 2N through in one window. The global window also
keeps grants at least ``0.8 / rate`` apart, so it runs smoothly instead of sending a whole
second's allowance at once. Group chats (negative chat ids: groups, supergroups, channels)
have both the per-chat and the per-group window.

A margin (``window_margin_s``) lengthens every window: a send reaches Telegram some
milliseconds after its grant, and not always the same number, so grants spaced by exactly one
period can arrive closer together than that. With the margin at least as long as that
jitter, Telegram never sees more than the limit in one of its windows.

``TelegramRateLimiter`` holds the limits of one process; ``recovery.redis_rate_limit``
holds them for every instance at once. Both offer ``RateLimiter``.

The clock and the sleep function are injectable so that tests control time.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

SMOOTHING = 0.8
"""The global window's minimum gap between grants, as a fraction of ``1 / rate``: up to 25 %
above the average rate to catch up after late wake-ups, never above the window's limit.
(Measured: 0.5 lets catch-up bursts through that network jitter then packs into 36 arrivals
in one second at 30/s; 0.8 keeps arrivals at 31 while reaching 29.9/s.)"""


class RateLimiter(Protocol):
    """What the notification sender needs of a rate limiter."""

    async def acquire(self, chat_id: int, *, max_wait: float = math.inf) -> bool:
        """Wait until a send to ``chat_id`` is allowed and count it (True); False without
        counting when that would take more than ``max_wait`` seconds."""
        ...

    def wait_time(self, chat_id: int) -> float:
        """Seconds until a send to ``chat_id`` is expected to be allowed (0: now)."""
        ...

    def pause(self, seconds: float) -> None:
        """Hold every send for ``seconds`` (a 429's ``retry_after``)."""
        ...

    def status(self) -> dict[str, object]:
        """Where the limits are held: ``{"backend": "local" | "redis", "shared": bool, ...}``
        (health and ``/readyz`` show it)."""
        ...


class SlidingWindow:
    """At most ``limit`` grants in any half-open window of ``period`` seconds, and grants at
    least ``min_gap`` seconds apart.

    ``wait_time(now)`` is 0 when a grant is allowed, else the seconds until one is;
    ``take(now)`` records a grant (callers check ``wait_time`` first).

    Raises:
        ValueError: on construction, when ``limit < 1``, ``period <= 0`` or ``min_gap < 0``.
    """

    __slots__ = ("_grants", "limit", "min_gap", "period")

    def __init__(self, limit: int, period: float, min_gap: float = 0.0) -> None:
        if limit < 1 or not period > 0 or min_gap < 0:
            raise ValueError("limit must be at least 1, period positive, min_gap not negative")
        self.limit = limit
        self.period = period
        self.min_gap = min_gap
        self._grants: deque[float] = deque(maxlen=limit)

    @classmethod
    def for_rate(
        cls, count: float, period: float, *, smooth: bool = False, margin: float = 0.0
    ) -> SlidingWindow:
        """A window for ``count`` grants per ``period`` seconds: ``floor(count)`` (at least 1)
        grants per ``period * floor(count) / count + margin`` seconds, e.g. 30 per 1 s as is,
        20 per 60 s as is, 0.5 per 1 s -> 1 per 2 s. ``smooth``: grants at least
        ``SMOOTHING * period / count`` apart.

        Raises:
            ValueError: ``count`` or ``period`` is not positive, or ``margin`` is negative.
        """
        if not count > 0 or not period > 0 or margin < 0:
            raise ValueError("count and period must be positive, margin not negative")
        limit = max(1, math.floor(count))
        gap = SMOOTHING * period / count if smooth else 0.0
        return cls(limit, period * limit / count + margin, gap)

    def wait_time(self, now: float) -> float:
        """Seconds until a grant is allowed (0 when it is)."""
        wait = 0.0
        if len(self._grants) == self.limit:
            # the oldest of the last `limit` grants must leave the window [now - period, now)
            wait = self._grants[0] + self.period - now
        if self._grants and self.min_gap:
            wait = max(wait, self._grants[-1] + self.min_gap - now)
        return wait if wait > 0 else 0.0

    def take(self, now: float) -> None:
        """Record a grant at ``now`` (the deque keeps the last ``limit``)."""
        self._grants.append(now)

    def is_idle(self, now: float) -> bool:
        """True when no grant is in the window (the window can be forgotten)."""
        return not self._grants or self._grants[-1] + max(self.period, self.min_gap) <= now


class TelegramRateLimiter:
    """Global, per-chat and per-group sliding windows plus a 429 pause, shared by every send
    of one process.

    Args:
        enabled: False turns the windows off (the 429 pause still applies: it is Telegram's
            instruction, not our policy).
        global_per_s: sends per second over all chats (Telegram: about 30).
        per_chat_per_s: sends per second to one chat (Telegram: 1).
        per_group_per_min: sends per minute to one group chat (Telegram: 20).
        window_margin_s: seconds added to every window (jitter between a grant and its
            arrival at Telegram).
        clock: monotonic seconds (default ``time.monotonic``).
        sleep: awaits the given seconds (default ``asyncio.sleep``).

    Raises:
        ValueError: a rate is not positive, or the margin is negative.
    """

    PRUNE_EVERY = 1000  # forget idle per-chat windows every this many grants

    def __init__(
        self,
        *,
        enabled: bool = True,
        global_per_s: float = 30.0,
        per_chat_per_s: float = 1.0,
        per_group_per_min: float = 20.0,
        window_margin_s: float = 0.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if window_margin_s < 0:
            raise ValueError("window_margin_s must not be negative")
        for name, value in (
            ("global_per_s", global_per_s),
            ("per_chat_per_s", per_chat_per_s),
            ("per_group_per_min", per_group_per_min),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive")
        self.enabled = enabled
        self.global_per_s = global_per_s
        self.per_chat_per_s = per_chat_per_s
        self.per_group_per_min = per_group_per_min
        self.window_margin_s = window_margin_s
        self.clock = clock
        self.sleep = sleep
        self.paused_until = -math.inf
        self.last_grant_at = -math.inf  # clock time of the last grant (for measurements)
        self._global = SlidingWindow.for_rate(
            global_per_s, 1.0, smooth=True, margin=window_margin_s
        )
        self._chats: dict[int, SlidingWindow] = {}
        self._groups: dict[int, SlidingWindow] = {}
        self._grants = 0
        self._turn = asyncio.Lock()  # FIFO: the global window is granted in arrival order

    @staticmethod
    def is_group(chat_id: int) -> bool:
        """Telegram gives groups, supergroups and channels negative chat ids."""
        return chat_id < 0

    def pause(self, seconds: float) -> None:
        """Hold every send for ``seconds`` from now (a 429's ``retry_after``); a longer pause
        already in force is kept."""
        self.paused_until = max(self.paused_until, self.clock() + max(0.0, seconds))

    def pause_remaining(self) -> float:
        """Seconds left of the current 429 pause (0 when none)."""
        return max(0.0, self.paused_until - self.clock())

    def status(self) -> dict[str, object]:
        """``{"backend": "local", "shared": False, "global_per_s": ...}``: this process alone."""
        return {"backend": "local", "shared": False, "global_per_s": self.global_per_s}

    def _windows(self, chat_id: int) -> list[SlidingWindow]:
        chat = self._chats.get(chat_id)
        if chat is None:
            chat = self._chats[chat_id] = SlidingWindow.for_rate(
                self.per_chat_per_s, 1.0, margin=self.window_margin_s
            )
        windows = [self._global, chat]
        if self.is_group(chat_id):
            group = self._groups.get(chat_id)
            if group is None:
                group = SlidingWindow.for_rate(
                    self.per_group_per_min, 60.0, margin=self.window_margin_s
                )
                self._groups[chat_id] = group
            windows.append(group)
        return windows

    def wait_time(self, chat_id: int) -> float:
        """Seconds until a send to ``chat_id`` is allowed by every limit (0: now)."""
        now = self.clock()
        wait = max(0.0, self.paused_until - now)
        if self.enabled:
            wait = max([wait, *(window.wait_time(now) for window in self._windows(chat_id))])
        return wait

    def _chat_wait_time(self, chat_id: int, now: float) -> float:
        """Seconds the pause and ``chat_id``'s own windows ask for (not the global one)."""
        wait = max(0.0, self.paused_until - now)
        if self.enabled:
            wait = max([wait, *(window.wait_time(now) for window in self._windows(chat_id)[1:])])
        return wait

    async def acquire(self, chat_id: int, *, max_wait: float = math.inf) -> bool:
        """Wait until a send to ``chat_id`` is allowed, then count it in every window;
        returns True. Returns False without counting anything when that would take more than
        ``max_wait`` seconds from now (a negative ``max_wait``: at once).

        First the chat's own limits are waited for, alone; then the global window is
        granted in arrival order (a FIFO lock), so a waiter is never overtaken again and
        again by later callers. The check and the take happen without an ``await`` in
        between, so concurrent callers never exceed a window. A caller that lost its chat's
        turn while queueing (another send to the same chat) leaves the queue and waits for
        the chat again.
        """
        if max_wait < 0:
            return False
        deadline = self.clock() + max_wait
        while True:
            wait = self._chat_wait_time(chat_id, self.clock())
            if wait > 0:
                if self.clock() + wait > deadline:
                    return False
                await self.sleep(max(wait, 1e-6))  # at least 1 us: a float remainder ends
                continue
            async with self._turn:
                while True:
                    now = self.clock()
                    if self._chat_wait_time(chat_id, now) > 0:
                        break  # the chat was taken meanwhile: wait for it outside the queue
                    wait = self.wait_time(chat_id)
                    if wait <= 0:
                        self._take(chat_id, now)
                        return True
                    if now + wait > deadline:
                        return False
                    await self.sleep(max(wait, 1e-6))

    def _take(self, chat_id: int, now: float) -> None:
        if not self.enabled:
            return
        for window in self._windows(chat_id):
            window.take(now)
        self.last_grant_at = now
        self._grants += 1
        if self._grants % self.PRUNE_EVERY == 0:
            self._prune(now)

    def _prune(self, now: float) -> None:
        for table in (self._chats, self._groups):
            for chat_id in [key for key, window in table.items() if window.is_idle(now)]:
                del table[chat_id]
