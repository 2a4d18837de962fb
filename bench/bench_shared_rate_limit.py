"""Benchmark: Telegram's limits shared by several processes through Redis.

Run: ``.venv/bin/python -m bench.bench_shared_rate_limit`` (``BENCH_DATABASE_URL`` or
``TEST_DATABASE_URL`` names a PostgreSQL server, else an embedded one is started; needs
``redis-server`` on the PATH and the ``bench`` extra for the ``limits`` library). Prints the
figures and writes ``bench/results/shared_rate_limit.md``.

1. The strategy, without the bot: three processes with eight concurrent senders each take
   grants for the same shuffled work (1,200 sends to 300 chats, global 60/s, 1/s per chat)
   from a Redis server of the benchmark's own, through
   a. ``recovery.redis_rate_limit.RedisRateLimiter`` (one Lua script: every window checked
      and taken at once, waits answered to the microsecond on Redis's clock);
   b. the ``limits`` library's moving window (``MovingWindowRateLimiter`` on Redis), as one
      would use it: hit the global limit, then the chat's; on a refusal sleep until the
      window's reset (``get_window_stats``). Its windows are whole seconds, so it gets no
      jitter margin.
   Interleaved runs (a, b, a, b), medians. Figures: achieved grant rate, the most grants in
   any 1-second window and to one chat in any 1-second window (grant instants on the
   clients' clocks), Redis round trips per grant (calls counted in the clients), global
   slots spent on sends their chat then refused.
2. The bot: ``python -m bot`` in webhook mode against the Bot API fake (in a process of its
   own), Redis limiter at
   Telegram's 30/s, 3,000 notifications to 300 chats (shuffled), one instance and then
   three instances sharing one Redis. Figures at the fake: achieved rate, the busiest
   second, per chat.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import Process, Queue
from pathlib import Path
from typing import Any

import aiohttp
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cost_floor import server_or_embedded, with_database  # noqa: E402
from database.migrate import upgrade_to_head  # noqa: E402
from database.pool import create_pool  # noqa: E402
from recovery.redis_rate_limit import RedisRateLimiter  # noqa: E402
from tests.e2e.fanout import Arrivals, chat_ids, most_in_window, seed_fanout  # noqa: E402
from tests.e2e.instances import Cluster, eventually, metric  # noqa: E402
from tests.fakes.remote_api import RemoteTelegramAPI  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "shared_rate_limit.md"
PROCESSES, SENDERS = 3, 8
STRATEGY_CHATS, STRATEGY_PER_CHAT, STRATEGY_GLOBAL = 300, 4, 60
MARGIN_S = 0.05  # RATE_WINDOW_MARGIN_S's default; limits' windows are whole seconds
BOT_CHATS, BOT_PER_CHAT, BOT_GLOBAL = 300, 10, 30


# --------------------------------------------------------------------------- servers
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def redis_server() -> Iterator[str]:
    """A redis-server of the benchmark's own (nothing on disk); yields its URL."""
    port = _free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait()


@contextmanager
def fresh_database(dsn: str) -> Iterator[str]:
    """A migrated database of its own, dropped afterwards."""
    name = f"bench_rl_{os.getpid()}_{time.monotonic_ns()}"
    admin = with_database(dsn, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    try:
        url = with_database(dsn, name)
        upgrade_to_head(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # type: ignore[arg-type]


# --------------------------------------------------------------------------- 1. strategy
def _work() -> list[int]:
    order = [c for c in chat_ids(STRATEGY_CHATS) for _ in range(STRATEGY_PER_CHAT)]
    random.Random(16).shuffle(order)
    return order


Result = tuple[list[tuple[float, int]], int, int]
"""(grant instants and chats, global slots wasted, Redis round trips)"""


async def _lua_worker(url: str, prefix: str, chats: list[int]) -> Result:
    from redis.asyncio import Redis

    limiter = RedisRateLimiter(
        Redis.from_url(url), scope="bench", key_prefix=prefix, global_per_s=STRATEGY_GLOBAL,
        window_margin_s=MARGIN_S,
    )  # fmt: skip
    calls = 0
    script = limiter._acquire_script

    async def counted(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await script(**kwargs)

    limiter._acquire_script = counted  # type: ignore[assignment]
    grants: list[tuple[float, int]] = []
    queue = list(reversed(chats))

    async def sender() -> None:
        while queue:
            chat = queue.pop()
            await limiter.acquire(chat)
            grants.append((time.time(), chat))

    await asyncio.gather(*(sender() for _ in range(SENDERS)))
    await limiter.close()
    return grants, 0, calls


async def _limits_worker(url: str, prefix: str, chats: list[int]) -> Result:
    from limits import RateLimitItemPerSecond
    from limits.aio.storage import RedisStorage
    from limits.aio.strategies import MovingWindowRateLimiter

    storage = RedisStorage(url.replace("redis://", "async+redis://"), key_prefix=prefix,
                           implementation="redispy")  # fmt: skip
    limiter = MovingWindowRateLimiter(storage)
    global_item = RateLimitItemPerSecond(STRATEGY_GLOBAL)
    chat_item = RateLimitItemPerSecond(1)
    grants: list[tuple[float, int]] = []
    wasted = calls = 0
    queue = list(reversed(chats))

    async def wait_for(item: Any, *ids: str) -> None:
        nonlocal calls
        calls += 1
        stats = await limiter.get_window_stats(item, *ids)
        await asyncio.sleep(max(stats.reset_time - time.time(), 0.001))

    async def sender() -> None:
        nonlocal wasted, calls
        while queue:
            chat = queue.pop()
            while True:
                calls += 1
                if not await limiter.hit(global_item, "global"):
                    await wait_for(global_item, "global")
                    continue
                calls += 1
                if not await limiter.hit(chat_item, "chat", str(chat)):
                    wasted += 1  # the global slot is spent all the same
                    await wait_for(chat_item, "chat", str(chat))
                    continue
                grants.append((time.time(), chat))
                break

    await asyncio.gather(*(sender() for _ in range(SENDERS)))
    return grants, wasted, calls


def _strategy_process(kind: str, url: str, prefix: str, chats: list[int], out: Queue) -> None:
    worker = _lua_worker if kind == "lua" else _limits_worker
    out.put(asyncio.run(worker(url, prefix, chats)))


@dataclass
class StrategyRun:
    kind: str
    rate: float
    busiest: int
    per_chat: int
    round_trips_per_grant: float
    wasted: int


def run_strategy(kind: str, url: str, run: int) -> StrategyRun:
    work = _work()
    shares = [work[i::PROCESSES] for i in range(PROCESSES)]
    prefix = f"bench-{kind}-{run}"
    out: Queue = Queue()
    processes = [
        Process(target=_strategy_process, args=(kind, url, prefix, share, out)) for share in shares
    ]
    for process in processes:
        process.start()
    results = [out.get() for _ in processes]
    for process in processes:
        process.join()
    grants = sorted(g for grants, _, _ in results for g in grants)
    times = [t for t, _ in grants]
    per_chat: dict[int, list[float]] = {}
    for t, chat in grants:
        per_chat.setdefault(chat, []).append(t)
    return StrategyRun(
        kind=kind,
        rate=(len(times) - 1) / (times[-1] - times[0]),
        busiest=most_in_window(times),
        per_chat=max(most_in_window(ts) for ts in per_chat.values()),
        round_trips_per_grant=sum(c for _, _, c in results) / len(times),
        wasted=sum(w for _, w, _ in results),
    )


# --------------------------------------------------------------------------- 2. the bot
@dataclass
class BotRun:
    instances: int
    rate: float
    busiest: int
    per_chat: int
    smallest_chat_gap: float
    sent_by: list[int]


async def run_bot(dsn: str, redis_url: str, instances: int, tmp: Path) -> BotRun:
    chats = chat_ids(BOT_CHATS)
    with fresh_database(dsn) as url:
        api = RemoteTelegramAPI(chats)
        async with aiohttp.ClientSession() as http:
            cluster = Cluster(url, tmp, http)
            env = {
                "REDIS_URL": redis_url, "REDIS_KEY_PREFIX": f"bench-bot-{instances}",
                "RATE_GLOBAL_PER_S": str(BOT_GLOBAL), "SCHEDULER_ENABLED": "false",
            }  # fmt: skip
            try:
                started = await asyncio.gather(
                    *(cluster.start(f"i{n}", api, **env) for n in range(instances))
                )
                pool = await create_pool(url, min_size=1, max_size=2)
                try:
                    total = await seed_fanout(pool, chats, BOT_PER_CHAT)
                finally:
                    await pool.close()

                await eventually(lambda: api.sends() >= total, 600, "every send", interval_s=0.5)
                sent_by = [
                    int(metric(await i.metrics(), "bot_notifications_total", outcome="sent"))
                    for i in started
                ]
            finally:
                await cluster.stop_all()
        arrivals = Arrivals.of(api, set(chats))
        api.stop()
    return BotRun(
        instances=instances,
        rate=arrivals.rate(),
        busiest=most_in_window(arrivals.times),
        per_chat=arrivals.most_per_chat(),
        smallest_chat_gap=arrivals.smallest_chat_gap(),
        sent_by=sent_by,
    )


# --------------------------------------------------------------------------- report
def report(strategies: list[StrategyRun], bots: list[BotRun], seconds: float) -> str:
    load = os.getloadavg()[0]
    lines = [
        "# Shared rate limits benchmark",
        "",
        f"Written by `bench/bench_shared_rate_limit.py` on {time.strftime('%Y-%m-%d %H:%M')} "
        f"(Python {sys.version.split()[0]}, 2 cores shared with other work, load average at "
        f"start {load:.1f}). Redis: a `redis-server` of the benchmark's own on loopback.",
        "",
        f"## 1. Strategy: {PROCESSES} processes x {SENDERS} senders, "
        f"{STRATEGY_CHATS * STRATEGY_PER_CHAT:,} grants to {STRATEGY_CHATS} chats, "
        f"global {STRATEGY_GLOBAL}/s, 1/s per chat",
        "",
        "Runs interleaved (Lua, limits, Lua, limits); medians, then each run. Grant instants "
        "are taken on the clients' clocks right after each grant.",
        "",
        "| strategy | achieved rate (median) | runs | most grants in any 1 s | most to one chat "
        "in any 1 s | Redis round trips / grant | global slots spent on refused sends |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, label in (("lua", "one Lua script (RedisRateLimiter)"),
                        ("limits", "`limits` moving window, global then chat")):  # fmt: skip
        runs = [s for s in strategies if s.kind == kind]
        lines.append(
            f"| {label} | {statistics.median(r.rate for r in runs):.2f}/s "
            f"| {', '.join(f'{r.rate:.2f}' for r in runs)} "
            f"| {', '.join(str(r.busiest) for r in runs)} "
            f"| {', '.join(str(r.per_chat) for r in runs)} "
            f"| {statistics.median(r.round_trips_per_grant for r in runs):.2f} "
            f"| {', '.join(str(r.wasted) for r in runs)} |"
        )
    lines += [
        "",
        f"## 2. The bot: {BOT_CHATS * BOT_PER_CHAT:,} notifications to {BOT_CHATS} chats, "
        f"RATE_GLOBAL_PER_S={BOT_GLOBAL}, webhook mode, one Redis",
        "",
        "Measured at the Bot API fake (arrival of each `sendMessage`).",
        "",
        "| instances | achieved rate | of the global limit | most in any 1 s | most to one chat "
        "in any 1 s | smallest gap in one chat | sent by each instance |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in bots:
        lines.append(
            f"| {b.instances} | {b.rate:.2f}/s | {b.rate / BOT_GLOBAL:.1%} | {b.busiest} "
            f"| {b.per_chat} | {b.smallest_chat_gap:.3f} s | {', '.join(map(str, b.sent_by))} |"
        )
    lines += ["", f"Total benchmark time: {seconds:.0f} s.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--runs", type=int, default=2, help="runs of each strategy")
    args = parser.parse_args()
    started = time.monotonic()
    strategies: list[StrategyRun] = []
    bots: list[BotRun] = []
    with redis_server() as redis_url:
        for run in range(args.runs):
            for kind in ("lua", "limits"):
                result = run_strategy(kind, redis_url, run)
                print(result, flush=True)
                strategies.append(result)
        with server_or_embedded() as dsn, tempfile.TemporaryDirectory(prefix="bench-rl") as tmp:
            for count in (1, 3):
                result = asyncio.run(run_bot(dsn, redis_url, count, Path(tmp)))
                print(result, flush=True)
                bots.append(result)
    text = report(strategies, bots, time.monotonic() - started)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
