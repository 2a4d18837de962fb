"""The Telegram rate limiter on virtual time: global, per-chat and per-group limits, the 429
pause, the wait bound, catching up after a late wake-up, and (property-based) no window ever
holding more grants than allowed."""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
from collections import defaultdict
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recovery.rate_limit import SMOOTHING, SlidingWindow, TelegramRateLimiter

EPS = 1e-6


class VirtualTime:
    """A clock and a sleep for the limiter: time moves only when every task sleeps, straight
    to the earliest wake-up."""

    def __init__(self, lag: float = 0.0) -> None:
        self.now = 0.0
        self.lag = lag
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        wake = self.now + max(seconds, 0.0) + self.lag
        heapq.heappush(self._sleepers, (wake, next(self._seq), future))
        await future

    async def run(self, *jobs: Awaitable[object]) -> None:
        tasks = [asyncio.ensure_future(job) for job in jobs]
        while not all(task.done() for task in tasks):
            for _ in range(5):  # let every runnable task reach its next sleep
                await asyncio.sleep(0)
            if self._sleepers and not all(task.done() for task in tasks):
                when, _, future = heapq.heappop(self._sleepers)
                self.now = max(self.now, when)
                future.set_result(None)
        for task in tasks:
            task.result()


def _limiter(vt: VirtualTime, **kwargs: object) -> TelegramRateLimiter:
    return TelegramRateLimiter(clock=vt.clock, sleep=vt.sleep, **kwargs)  # type: ignore[arg-type]


def _grant_recorder(
    vt: VirtualTime, limiter: TelegramRateLimiter, grants: list[tuple[float, int]]
) -> Callable[[int], Awaitable[None]]:
    async def send(chat_id: int) -> None:
        assert await limiter.acquire(chat_id)
        grants.append((vt.now, chat_id))

    return send


def _max_in_window(times: list[float], window: float) -> int:
    """Most grants in any half-open window [t, t + window) (t at a grant)."""
    times = sorted(times)
    return max(
        (bisect.bisect_left(times, t + window - EPS) - i for i, t in enumerate(times)), default=0
    )


async def test_the_global_limit_spaces_sends_over_all_chats() -> None:
    vt = VirtualTime()
    limiter = _limiter(vt, global_per_s=30.0)
    grants: list[tuple[float, int]] = []
    send = _grant_recorder(vt, limiter, grants)

    await vt.run(*(send(chat) for chat in range(1, 91)))

    times = [t for t, _ in grants]
    assert len(times) == 90
    assert _max_in_window(times, 1.0) == 30
    assert max(times) < 3.0  # 30 per second on average, no slower
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) == pytest.approx(SMOOTHING / 30)  # smooth: never a burst


async def test_late_wake_ups_do_not_cost_throughput_nor_break_the_window() -> None:
    vt = VirtualTime(lag=0.003)  # every sleep overshoots by 3 ms, as on a busy event loop
    limiter = _limiter(vt, global_per_s=30.0)
    grants: list[tuple[float, int]] = []
    send = _grant_recorder(vt, limiter, grants)

    await vt.run(*(send(chat) for chat in range(1, 91)))

    times = [t for t, _ in grants]
    assert _max_in_window(times, 1.0) == 30
    # 90 sends in under 3 s: the lag is caught up (sends spaced exactly 1/30 s apart, as a
    # one-token bucket grants them, would need 89 * (1/30 + 0.003) = 3.23 s)
    assert max(times) < 3.0


async def test_a_waiter_is_not_overtaken_by_later_callers() -> None:
    vt = VirtualTime()
    limiter = _limiter(vt, global_per_s=10.0)
    await vt.run(*(limiter.acquire(chat) for chat in range(1, 11)))  # the window is full
    order: list[str] = []

    async def sniper(name: str, chat: int, at: float) -> None:
        await vt.sleep(at - vt.now)  # wakes exactly when a grant frees, before the waiter
        assert await limiter.acquire(chat)
        order.append(name)

    async def waiter() -> None:
        assert await limiter.acquire(99, max_wait=0.5)
        order.append("waiter")

    opening = 1.0  # when the first grant of the full window leaves it
    snipers = [sniper(f"s{i}", 100 + i, opening + i * 0.08) for i in range(8)]
    await vt.run(*snipers, waiter())

    assert order[0] == "waiter"  # it asked first; later callers queue behind it


async def test_one_chat_gets_one_message_per_second() -> None:
    vt = VirtualTime()
    limiter = _limiter(vt)
    grants: list[tuple[float, int]] = []
    send = _grant_recorder(vt, limiter, grants)

    await vt.run(*(send(42) for _ in range(5)), send(43))

    to_42 = [t for t, chat in grants if chat == 42]
    assert to_42 == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0])
    assert next(t for t, chat in grants if chat == 43) < 0.1  # another chat is not held up


async def test_a_group_gets_at_most_20_messages_per_minute() -> None:
    vt = VirtualTime()
    limiter = _limiter(vt)
    grants: list[tuple[float, int]] = []
    send = _grant_recorder(vt, limiter, grants)

    await vt.run(*(send(-100_500) for _ in range(41)))

    times = [t for t, _ in grants]
    assert _max_in_window(times, 60.0) == 20
    assert times[1] - times[0] == pytest.approx(1.0)  # and one per second, as every chat
    assert times[20] - times[0] == pytest.approx(60.0)  # the 21st waits for the window


async def test_a_429_pause_holds_every_chat_and_a_shorter_pause_does_not_cut_it() -> None:
    vt = VirtualTime()
    limiter = _limiter(vt)
    grants: list[tuple[float, int]] = []
    send = _grant_recorder(vt, limiter, grants)

    limiter.pause(7)
    limiter.pause(2)
    assert limiter.pause_remaining() == pytest.approx(7.0)
    assert limiter.wait_time(1) == pytest.approx(7.0)
    await vt.run(send(1), send(2))

    assert min(t for t, _ in grants) == pytest.approx(7.0)


async def test_when_disabled_only_the_429_pause_applies() -> None:
    vt = VirtualTime()
    limiter = _limiter(vt, enabled=False)
    grants: list[tuple[float, int]] = []
    send = _grant_recorder(vt, limiter, grants)

    await vt.run(*(send(1) for _ in range(100)))
    assert {t for t, _ in grants} == {0.0}

    limiter.pause(3)
    await vt.run(send(1))
    assert grants[-1][0] == pytest.approx(3.0)


async def test_acquire_gives_up_without_taking_a_token_past_max_wait() -> None:
    vt = VirtualTime()
    limiter = _limiter(vt)

    assert await limiter.acquire(5)
    assert await limiter.acquire(5, max_wait=0.5) is False
    assert limiter.wait_time(5) == pytest.approx(1.0)  # nothing was counted
    assert await limiter.acquire(6, max_wait=-1) is False
    granted: list[bool] = []

    async def wait_for_it() -> None:
        granted.append(await limiter.acquire(5, max_wait=1.0))

    await vt.run(wait_for_it())
    assert granted == [True] and vt.now == pytest.approx(1.0)


def test_invalid_rates_are_rejected() -> None:
    with pytest.raises(ValueError):
        TelegramRateLimiter(global_per_s=0)
    with pytest.raises(ValueError):
        SlidingWindow(limit=0, period=1.0)
    with pytest.raises(ValueError):
        SlidingWindow.for_rate(20, 0)


def test_fractional_rates_become_whole_grants_per_longer_windows() -> None:
    half = SlidingWindow.for_rate(0.5, 1.0)
    assert (half.limit, half.period) == (1, 2.0)
    group = SlidingWindow.for_rate(20, 60.0)
    assert (group.limit, group.period) == (20, 60.0)


@settings(max_examples=40, deadline=None)
@given(
    chats=st.lists(st.sampled_from([1, 2, 3, 4, -10, -11]), min_size=1, max_size=60),
    global_per_s=st.sampled_from([2.0, 5.0, 30.0]),
    per_group_per_min=st.sampled_from([6.0, 20.0]),
)
def test_no_window_ever_holds_more_grants_than_a_limit(
    chats: list[int], global_per_s: float, per_group_per_min: float
) -> None:
    vt = VirtualTime()
    limiter = _limiter(vt, global_per_s=global_per_s, per_group_per_min=per_group_per_min)
    grants: list[tuple[float, int]] = []
    send = _grant_recorder(vt, limiter, grants)

    asyncio.run(vt.run(*(send(chat) for chat in chats)))

    assert len(grants) == len(chats)
    assert _max_in_window([t for t, _ in grants], 1.0) <= global_per_s
    by_chat: dict[int, list[float]] = defaultdict(list)
    for t, chat in grants:
        by_chat[chat].append(t)
    for chat, times in by_chat.items():
        assert _max_in_window(times, 1.0) <= 1
        if chat < 0:
            assert _max_in_window(times, 60.0) <= per_group_per_min
