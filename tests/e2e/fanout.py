"""A notification fan-out for the rate-limit test and benchmark: many due outbox rows to
many chats, and what the Bot API fake saw of them (arrival times, per chat)."""

from __future__ import annotations

import bisect
import random
from collections import defaultdict
from dataclasses import dataclass

import asyncpg

from tests.fakes.remote_api import RemoteTelegramAPI

FIRST_CHAT = 300_000_001


def chat_ids(count: int) -> list[int]:
    """``count`` private chat ids."""
    return list(range(FIRST_CHAT, FIRST_CHAT + count))


async def seed_fanout(pool: asyncpg.Pool, chats: list[int], per_chat: int, seed: int = 16) -> int:
    """``per_chat`` due notifications to every chat, in a shuffled order (fixed ``seed``): a
    chat's rows are spread over the outbox, some close enough that its one-per-second limit
    holds them. One transaction (one NOTIFY wakes every sender); idempotency keys name the
    seed, so fan-outs with different seeds add up. Returns the row count."""
    order = [chat for chat in chats for _ in range(per_chat)]
    random.Random(seed).shuffle(order)
    await pool.execute(
        """
        INSERT INTO pending_notifications
            (idempotency_key, chat_id, template_key, params, next_attempt_at)
        SELECT 'fanout:' || $2 || ':' || n, chat, 'request.status_changed',
               jsonb_build_object('request_id', n, 'state', 'review'), now()
          FROM unnest($1::bigint[]) WITH ORDINALITY AS t(chat, n)
        """,
        order,
        str(seed),
    )
    return len(order)


def most_in_window(times: list[float], window: float = 1.0) -> int:
    """The most instants in any half-open window ``[t, t + window)`` (0 for none)."""
    times = sorted(times)
    return max((bisect.bisect_left(times, t + window) - i for i, t in enumerate(times)), default=0)


@dataclass(frozen=True)
class Arrivals:
    """The ``sendMessage`` calls the fake answered ok: (chat, arrival time) in order."""

    calls: list[tuple[int, float]]

    @classmethod
    def of(cls, api: RemoteTelegramAPI, chats: set[int]) -> Arrivals:
        """The fake's successful sends to ``chats``."""
        return cls(sorted((c for c in api.calls() if c[0] in chats), key=lambda item: item[1]))

    @property
    def times(self) -> list[float]:
        """Arrival times, ascending."""
        return [t for _, t in self.calls]

    def rate(self) -> float:
        """Messages per second from the first arrival to the last."""
        times = self.times
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0

    def most_per_chat(self, window: float = 1.0) -> int:
        """The most arrivals to one chat in any window of ``window`` seconds."""
        by_chat: dict[int, list[float]] = defaultdict(list)
        for chat, t in self.calls:
            by_chat[chat].append(t)
        return max((most_in_window(ts, window) for ts in by_chat.values()), default=0)

    def smallest_chat_gap(self) -> float:
        """The shortest time between two arrivals to the same chat (inf for none)."""
        last: dict[int, float] = {}
        gap = float("inf")
        for chat, t in self.calls:
            if chat in last:
                gap = min(gap, t - last[chat])
            last[chat] = t
        return gap
