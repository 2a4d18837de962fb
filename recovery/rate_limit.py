"""An asyncio rate limiter for Telegram's sending limits (token buckets, no aiogram).

Limits (https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this):
"avoid sending more than one message per second" in one chat, "not more than 20 messages
per minute to the same group", and "not more than about 30 messages per second" in bulk.
A 429 answer carries ``retry_after``: every send waits that long (``pause``).

Every bucket has a capacity (burst) of one token by default, so grants of one bucket are at
least ``1 / rate`` seconds apart and no half-open window of ``1 / rate * n`` seconds holds more
than ``n`` grants: with 30/s, no second sees more than 30 sends. Group chats (negative chat
ids: groups, supergroups, channels) have both the per-chat and the per-group bucket.

The clock and the sleep function are injectable so that tests control time.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(slots=True)
class TokenBucket:
    """A token bucket: ``rate`` tokens per second, at most ``capacity`` tokens stored.

    Starts full. ``wait_time(now)`` is 0 when a token is available, else the seconds until one
    is; ``take(now)`` consumes one token (callers check ``wait_time`` first).

    Raises:
        ValueError: on construction, when ``rate <= 0`` or ``capacity < 1``.
    """

    rate: float
    capacity: float = 1.0
    tokens: float = math.nan
    updated: float = math.nan

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError("rate must be positive")
        if self.capacity < 1:
            raise ValueError("capacity must be at least 1")
        if math.isnan(self.tokens):
            self.tokens = self.capacity

    def _refill(self, now: float) -> None:
        if math.isnan(self.updated):
            self.updated = now
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self.updated = max(self.updated, now)

    def wait_time(self, now: float) -> float:
        """Seconds until one token is available (0 when one is)."""
        self._refill(now)
        # 1e-9: a token refilled to 0.9999999999 by float arithmetic counts as whole
        missing = 1.0 - self.tokens
        return 0.0 if missing <= 1e-9 else missing / self.rate

    def take(self, now: float) -> None:
        """Consume one token (may go slightly negative by float error; refills later)."""
        self._refill(now)
        self.tokens -= 1.0

    def is_full(self, now: float) -> bool:
        """True when the bucket holds its whole capacity (it can be forgotten)."""
        self._refill(now)
        return self.tokens >= self.capacity


class TelegramRateLimiter:
    """Global, per-chat and per-group token buckets plus a 429 pause, shared by every send of
    one process.

    Args:
        enabled: False turns the buckets off (the 429 pause still applies: it is Telegram's
            instruction, not our policy).
        global_per_s: sends per second over all chats (Telegram: about 30).
        per_chat_per_s: sends per second to one chat (Telegram: 1).
        per_group_per_min: sends per minute to one group chat (Telegram: 20).
        clock: monotonic seconds (default ``time.monotonic``).
        sleep: awaits the given seconds (default ``asyncio.sleep``).

    Raises:
        ValueError: a rate is not positive.
    """

    PRUNE_EVERY = 1000  # forget idle per-chat buckets every this many grants

    def __init__(
        self,
        *,
        enabled: bool = True,
        global_per_s: float = 30.0,
        per_chat_per_s: float = 1.0,
        per_group_per_min: float = 20.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
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
        self.clock = clock
        self.sleep = sleep
        self.paused_until = -math.inf
        self._global = TokenBucket(global_per_s)
        self._chats: dict[int, TokenBucket] = {}
        self._groups: dict[int, TokenBucket] = {}
        self._grants = 0

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

    def _buckets(self, chat_id: int) -> list[TokenBucket]:
        chat = self._chats.get(chat_id)
        if chat is None:
            chat = self._chats[chat_id] = TokenBucket(self.per_chat_per_s)
        buckets = [self._global, chat]
        if self.is_group(chat_id):
            group = self._groups.get(chat_id)
            if group is None:
                group = self._groups[chat_id] = TokenBucket(self.per_group_per_min / 60.0)
            buckets.append(group)
        return buckets

    def wait_time(self, chat_id: int) -> float:
        """Seconds until a send to ``chat_id`` is allowed by every limit (0: now)."""
        now = self.clock()
        wait = max(0.0, self.paused_until - now)
        if self.enabled:
            wait = max([wait, *(bucket.wait_time(now) for bucket in self._buckets(chat_id))])
        return wait

    async def acquire(self, chat_id: int, *, max_wait: float = math.inf) -> bool:
        """Wait until a send to ``chat_id`` is allowed, then count it against every bucket;
        returns True. Returns False without counting anything when that would take more than
        ``max_wait`` seconds from now (a negative ``max_wait``: at once).

        The check and the take happen without an ``await`` in between, so concurrent callers
        never overdraw a bucket; a caller that waited checks again (another may have taken
        the token first).
        """
        if max_wait < 0:
            return False
        deadline = self.clock() + max_wait
        while True:
            wait = self.wait_time(chat_id)
            if wait <= 0:
                break
            if self.clock() + wait > deadline:
                return False
            await self.sleep(wait)
        if self.enabled:
            now = self.clock()
            for bucket in self._buckets(chat_id):
                bucket.take(now)
            self._grants += 1
            if self._grants % self.PRUNE_EVERY == 0:
                self._prune(now)
        return True

    def _prune(self, now: float) -> None:
        for table in (self._chats, self._groups):
            for chat_id in [key for key, bucket in table.items() if bucket.is_full(now)]:
                del table[chat_id]
