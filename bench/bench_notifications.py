"""Benchmark: drain due notifications from the outbox against a local fake Bot API.

Run: ``.venv/bin/python -m bench.bench_notifications [--full-telegram-rate]``
(``BENCH_DATABASE_URL`` or ``TEST_DATABASE_URL`` names a PostgreSQL server; else an embedded
one is started). Prints the figures and writes ``bench/results/notifications.md``.

Scenarios, side by side in one run:

1. Rate limiter off, 10,000 due rows, three runs each (medians quoted):
   a. a null sender (no HTTP): the database and core cost per notification;
   b. the real path: aiogram ``Bot`` -> HTTP -> ``FakeTelegramAPI`` answering at once.
   Database figures: round trips and summed statement latency per notification (a timing
   proxy around the pool) and ``pg_stat_database`` deltas (commits, tuples written).
2. Rate limiter on (HTTP path), one run each:
   a. 10,000 rows, global limit 100/s (below what this machine sustains unlimited, so the
      limiter binds; the run takes ~100 s);
   b. Telegram's default global limit, 30/s, on 1,000 rows (10,000 with
      ``--full-telegram-rate``: ~5.6 minutes);
   c. the same with the first version's limiter (a token bucket of one token), 1,000 rows;
   d. the per-chat limit: 20 chats x 15 rows at 1 message/s per chat.
   Figures: achieved rate against the configured limit, and the most sends in any 1-second
   window (sliding, half-open) at the limiter's grants (its own clock, exact) and at the
   fake server's arrivals (after the HTTP path's jitter), and per calendar second there.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import Pipe, Process
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
from aiogram import Bot
from aiogram.client.default import DefaultBotProperties
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.enums import ParseMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cost_floor import server_or_embedded, with_database  # noqa: E402
from bot.i18n import create_i18n  # noqa: E402
from bot.notification_texts import make_renderer  # noqa: E402
from database.migrate import upgrade_to_head  # noqa: E402
from database.pool import create_pool  # noqa: E402
from recovery.notifications import NotificationRetryManager  # noqa: E402
from recovery.rate_limit import SlidingWindow, TelegramRateLimiter  # noqa: E402
from tests.fakes.telegram_api import DEFAULT_TOKEN, FakeTelegramAPI  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "notifications.md"
CHATS = 1_000
CHAT_IDS = list(range(200_000_001, 200_000_001 + CHATS))
BATCH = 50
CONCURRENCY = 8


# --------------------------------------------------------------------------- database
def _admin(dsn: str, sql: str) -> None:
    with psycopg.connect(with_database(dsn, "postgres"), autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


class TimedPool:
    """Forwards the pool calls the manager makes, counting them and summing their latency
    (concurrent calls overlap, so the sum can exceed wall time)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.calls = 0
        self.seconds = 0.0

    def reset(self) -> None:
        self.calls, self.seconds = 0, 0.0

    async def _timed(self, method: str, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await getattr(self._pool, method)(*args, **kwargs)
        finally:
            self.calls += 1
            self.seconds += time.perf_counter() - started

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        return await self._timed("fetch", *args, **kwargs)

    async def fetchval(self, *args: Any, **kwargs: Any) -> Any:
        return await self._timed("fetchval", *args, **kwargs)

    async def fetchrow(self, *args: Any, **kwargs: Any) -> Any:
        return await self._timed("fetchrow", *args, **kwargs)

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        return await self._timed("execute", *args, **kwargs)

    def acquire(self, *args: Any, **kwargs: Any) -> Any:
        return self._pool.acquire(*args, **kwargs)

    async def release(self, *args: Any, **kwargs: Any) -> Any:
        return await self._pool.release(*args, **kwargs)


async def seed(pool: asyncpg.Pool, rows: int, chats: list[int], user_ids: list[int]) -> None:
    """``rows`` due notifications spread round-robin over ``chats``."""
    await pool.execute("TRUNCATE pending_notifications CASCADE")
    await pool.execute(
        "UPDATE notification_sender_state SET paused_until = NULL, queue_full_since = NULL"
    )
    await pool.execute(
        """
        INSERT INTO pending_notifications
            (idempotency_key, recipient_id, chat_id, template_key, params, next_attempt_at)
        SELECT 'bench:' || g, ($2::bigint[])[1 + g % cardinality($2::bigint[])],
               ($1::bigint[])[1 + g % cardinality($1::bigint[])], 'request.status_changed',
               jsonb_build_object('request_id', g, 'state', 'review'),
               now() - interval '1 second'
          FROM generate_series(0, $3 - 1) AS g
        """,
        chats,
        user_ids,
        rows,
    )
    await pool.execute("ANALYZE pending_notifications")


async def db_stats(dsn: str) -> dict[str, int]:
    """This database's counters in ``pg_stat_database`` (read on a fresh connection)."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT xact_commit, tup_updated, tup_inserted, tup_deleted "
            "FROM pg_stat_database WHERE datname = current_database()"
        )
    finally:
        await conn.close()
    assert row is not None
    return dict(row)


# --------------------------------------------------------------------------- the fake
def _serve_fake(conn: Connection, chats: list[int]) -> None:
    """Child process: the Bot API fake, answering at once; commands arrive on ``conn``."""

    async def serve() -> None:
        async with FakeTelegramAPI(token=DEFAULT_TOKEN) as api:
            for chat in chats:
                api.add_user(chat, f"U{chat}")
            conn.send(api.base_url)
            loop = asyncio.get_running_loop()
            while True:
                command = await loop.run_in_executor(None, conn.recv)
                if command == "clear":
                    api.requests.clear()
                    conn.send(True)
                elif command == "calls":
                    conn.send(
                        [
                            (int(c.params["chat_id"]), c.timestamp)
                            for c in api.calls("sendMessage")
                            if c.ok
                        ]
                    )
                else:
                    conn.send(True)
                    return

    asyncio.run(serve())


class FakeServer:
    """``FakeTelegramAPI`` in its own process, so that it does not share a core with the
    sender under measurement; ``calls()`` returns (chat id, arrival time) of accepted sends."""

    def __init__(self, chats: list[int]) -> None:
        self._conn, child = Pipe()
        self._process = Process(target=_serve_fake, args=(child, chats), daemon=True)
        self._process.start()
        self.base_url: str = self._conn.recv()

    def _ask(self, command: str) -> Any:
        self._conn.send(command)
        return self._conn.recv()

    async def clear(self) -> None:
        await asyncio.to_thread(self._ask, "clear")

    async def calls(self) -> list[tuple[int, float]]:
        return await asyncio.to_thread(self._ask, "calls")

    def stop(self) -> None:
        self._ask("stop")
        self._process.join(10)


class RecordingLimiter(TelegramRateLimiter):
    """The limiter, recording the time of every grant on its own clock (``time.monotonic``):
    the very instant its windows counted (``last_grant_at``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.grants: list[float] = []

    async def acquire(self, chat_id: int, *, max_wait: float = float("inf")) -> bool:
        granted = await super().acquire(chat_id, max_wait=max_wait)
        if granted:
            self.grants.append(self.last_grant_at)
        return granted


# --------------------------------------------------------------------------- measuring
@dataclass
class Run:
    """One drain of the whole outbox."""

    rows: int
    seconds: float
    db_calls: int = 0
    db_seconds: float = 0.0
    stats: dict[str, int] = field(default_factory=dict)
    server_times: list[float] = field(default_factory=list)
    grant_times: list[float] = field(default_factory=list)
    per_chat_server: dict[int, list[float]] = field(default_factory=dict)
    deferred: int = 0

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


def max_in_window(times: list[float], window: float) -> int:
    """Most events in any half-open window ``[t, t + window)`` (t at an event)."""
    times = sorted(times)
    return max((bisect.bisect_left(times, t + window) - i for i, t in enumerate(times)), default=0)


def max_per_calendar_second(times: list[float]) -> int:
    counts: dict[int, int] = defaultdict(int)
    for t in times:
        counts[int(t)] += 1
    return max(counts.values(), default=0)


def achieved_rate(times: list[float]) -> float:
    times = sorted(times)
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


async def drain_all(manager: NotificationRetryManager, pool: asyncpg.Pool) -> int:
    """Drain (the streaming path the run loop uses) until no row is left unsent; returns the
    rows the limiter put back on the way. Checks that every row ends sent."""
    deferred = 0
    while True:
        result = await manager.drain(max_batches=1_000_000)
        deferred += result.deferred
        if result.failed or result.retried or result.dead:
            raise RuntimeError(f"unexpected outcomes: {result}")
        left = await pool.fetchval(
            "SELECT count(*) FROM pending_notifications WHERE status <> 'sent'"
        )
        if not left:
            return deferred
        await asyncio.sleep(0.05)


async def measure(
    dsn: str,
    api: FakeServer,
    make_sender: Callable[[list[float]], Any],
    *,
    rows: int,
    chats: list[int],
    user_ids: list[int],
    limiter: TelegramRateLimiter,
) -> Run:
    """Seed ``rows`` due rows, drain them all with a fresh pool and manager, and collect the
    figures. The pools are closed before the statistics are read: a backend reports its
    counters to ``pg_stat_database`` when it exits (idle ones only every few seconds)."""
    setup = await create_pool(dsn, min_size=1, max_size=1)
    try:
        await seed(setup, rows, chats, user_ids)
    finally:
        await setup.close()
    await api.clear()
    await asyncio.sleep(0.5)
    before = await db_stats(dsn)
    pool = await create_pool(dsn, min_size=CONCURRENCY + 2, max_size=CONCURRENCY + 2)
    timed = TimedPool(pool)
    grants: list[float] = []
    manager = NotificationRetryManager(
        timed,  # type: ignore[arg-type]
        sender=make_sender(grants),
        renderer=make_renderer(create_i18n("en")),
        rate_limiter=limiter,
        batch_size=BATCH,
        concurrency=CONCURRENCY,
        instance_id="bench",
    )
    try:
        started = time.perf_counter()
        deferred = await drain_all(manager, pool)
        seconds = time.perf_counter() - started
    finally:
        await pool.close()
    await asyncio.sleep(0.5)
    after = await db_stats(dsn)
    calls = await api.calls()
    assert not calls or len(calls) >= rows, (len(calls), rows)
    per_chat: dict[int, list[float]] = defaultdict(list)
    for chat_id, timestamp in calls:
        per_chat[chat_id].append(timestamp)
    return Run(
        rows=rows,
        seconds=seconds,
        db_calls=timed.calls,
        db_seconds=timed.seconds,
        stats={key: after[key] - before[key] for key in after},
        server_times=[timestamp for _, timestamp in calls],
        grant_times=limiter.grants if isinstance(limiter, RecordingLimiter) else grants,
        per_chat_server=dict(per_chat),
        deferred=deferred,
    )


# --------------------------------------------------------------------------- the run
async def bench(dsn: str, api: FakeServer, *, full_telegram_rate: bool, repeats: int) -> str:
    bot = Bot(
        DEFAULT_TOKEN,
        session=AiohttpSession(api=TelegramAPIServer.from_base(api.base_url)),
        default=DefaultBotProperties(parse_mode=ParseMode.HTML),
    )
    lines: list[str] = []

    def out(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    def http_sender(grants: list[float]) -> Any:
        async def send(chat_id: int, text: str) -> int | None:
            grants.append(time.time())
            return (await bot.send_message(chat_id, text)).message_id

        return send

    def null_sender(grants: list[float]) -> Any:
        async def send(chat_id: int, text: str) -> int | None:
            grants.append(time.time())
            return 1

        return send

    try:
        conn = await asyncpg.connect(dsn)
        try:
            user_ids = [
                r["id"]
                for r in await conn.fetch(
                    "INSERT INTO users (telegram_id, full_name) "
                    "SELECT unnest($1::bigint[]), 'bench' RETURNING id",
                    CHAT_IDS,
                )
            ]
        finally:
            await conn.close()
        everyone = {"chats": CHAT_IDS, "user_ids": user_ids}
        off = TelegramRateLimiter(enabled=False)
        conn = await asyncpg.connect(dsn)
        try:
            server = await conn.fetchval("SHOW server_version")
        finally:
            await conn.close()
        out("# Notification outbox benchmark")
        out()
        out(
            f"Written by `bench/bench_notifications.py` on {time.strftime('%Y-%m-%d %H:%M')} "
            f"(PostgreSQL {server}, Python {sys.version.split()[0]}, {os.cpu_count()} cores "
            f"shared with other work, load average at start {os.getloadavg()[0]:.1f}). "
            f"PostgreSQL on the same host; the fake Bot API (`tests/fakes/telegram_api.py`) in "
            f"its own process, answering at once; a real aiogram `Bot` sends to it. Batch "
            f"{BATCH}, concurrency {CONCURRENCY}, {CHATS:,} chats, the run loop's streaming "
            "drain."
        )
        out()
        out(
            "Columns: *DB round trips / row*: statements the core issued (a timing proxy "
            "around the pool), one claim per batch plus the group-committed marks; *DB "
            "latency*: their summed latency (concurrent statements overlap); *commits* and "
            "*tuples written*: `pg_stat_database` deltas (asyncpg's reset on each release "
            "of a pooled connection is a transaction too, hence about two commits per "
            "statement). *Most sends in any 1 s window*: sliding half-open windows over the "
            "limiter's grant instants (its own clock) and over the fake server's arrival "
            "times; *put back*: rows returned to the outbox because a limit would have held "
            "them longer than `max_hold_s`."
        )
        out()
        out("## 1. Rate limiter off: 10,000 due notifications")
        out()
        out(
            f"| sender | rows/s (median of {repeats}) | runs, rows/s | DB round trips / row "
            "| DB latency ms / row (summed) | commits / row | tuples written / row |"
        )
        out("|---|---|---|---|---|---|---|")
        for name, factory in (("null (no HTTP)", null_sender), ("aiogram -> HTTP", http_sender)):
            runs = [
                await measure(dsn, api, factory, rows=10_000, limiter=off, **everyone)
                for _ in range(repeats)
            ]
            median = sorted(runs, key=lambda r: r.rate)[len(runs) // 2]
            written = median.stats["tup_updated"] + median.stats["tup_inserted"]
            out(
                f"| {name} | {median.rate:,.0f} | "
                f"{', '.join(f'{r.rate:,.0f}' for r in runs)} | "
                f"{median.db_calls / median.rows:.3f} | "
                f"{1000 * median.db_seconds / median.rows:.3f} | "
                f"{median.stats['xact_commit'] / median.rows:.3f} | "
                f"{written / median.rows:.3f} |"
            )
        out()
        out("## 2. Rate limiter on (aiogram -> HTTP)")
        out()
        out(
            "| scenario | rows | configured limit | achieved rate | most sends in any 1 s "
            "window: server / limiter grants | most in a calendar second (server) | put back |"
        )
        out("|---|---|---|---|---|---|---|")
        telegram_rows = 10_000 if full_telegram_rate else 1_000
        for label, rows, rate, one_token in (
            ("window, limit 100/s", 10_000, 100.0, False),
            ("window, Telegram default", telegram_rows, 30.0, False),
            ("one-token bucket (first version), Telegram default", 1_000, 30.0, True),
        ):
            limiter = RecordingLimiter(global_per_s=rate)
            if one_token:
                # the first version's global limit: one grant per 1/rate seconds, which is a
                # token bucket holding one token
                limiter._global = SlidingWindow(1, 1.0 / rate)
            run = await measure(dsn, api, http_sender, rows=rows, limiter=limiter, **everyone)
            out(
                f"| {label} | {rows:,} | {rate:.0f}/s global | "
                f"{achieved_rate(run.server_times):.2f}/s | "
                f"{max_in_window(run.server_times, 1.0)} / "
                f"{max_in_window(run.grant_times, 1.0)} | "
                f"{max_per_calendar_second(run.server_times)} | {run.deferred} |"
            )
        run = await measure(
            dsn,
            api,
            http_sender,
            rows=300,
            limiter=RecordingLimiter(),
            chats=CHAT_IDS[:20],
            user_ids=user_ids[:20],
        )
        worst = max(max_in_window(times, 1.0) for times in run.per_chat_server.values())
        rates = [achieved_rate(times) for times in run.per_chat_server.values()]
        gaps = [
            b - a
            for times in run.per_chat_server.values()
            for a, b in zip(sorted(times), sorted(times)[1:], strict=False)
        ]
        out(
            f"| per chat: 20 chats x 15 rows | 300 | 1/s per chat | "
            f"{statistics.median(rates):.3f}/s per chat (median) | "
            f"{worst} per chat (server); smallest gap {min(gaps):.3f} s | - | {run.deferred} |"
        )
    finally:
        await bot.session.close()
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--full-telegram-rate",
        action="store_true",
        help="drain all 10,000 rows at Telegram's 30/s (about 5.6 minutes)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    api = FakeServer(CHAT_IDS)  # started before any event loop exists in this process
    try:
        with server_or_embedded() as dsn:
            name = f"bench_notifications_{os.getpid()}"
            _admin(dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            _admin(dsn, f'CREATE DATABASE "{name}"')
            try:
                url = with_database(dsn, name)
                upgrade_to_head(url)
                started = time.perf_counter()
                report = asyncio.run(
                    bench(
                        url,
                        api,
                        full_telegram_rate=args.full_telegram_rate,
                        repeats=args.repeats,
                    )
                )
                took = time.perf_counter() - started
            finally:
                _admin(dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        api.stop()
    report += f"\n\nTotal benchmark time: {took:.0f} s.\n"
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report)
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
