"""Benchmark: the notification outbox against pgqueuer on the same PostgreSQL: draining a
backlog with a no-op send, and enqueueing a batch; round trips and commits per row.

Run: ``.venv/bin/pip install -e '.[bench]'`` once (pgqueuer), then
``.venv/bin/python -m bench.bench_outbox [--rounds 5] [--rows 10000] [--code DIR]``
(``BENCH_DATABASE_URL`` names the server, default the local one; a scratch database is
created and dropped). Writes ``bench/results/outbox.md`` (``--code`` elsewhere:
``outbox-<dir name>.md``).

- *drain*: ``rows`` due notifications; ``NotificationRetryManager.drain`` (batch 50, 8 sends
  in flight, rate limiter off, the real renderer, a sender that returns at once) against
  pgqueuer's ``QueueManager.run(batch_size=50, mode=drain)`` with a no-op entrypoint.
- *batch enqueue*: ``rows`` notifications in one transaction: ``outbox.enqueue_many``
  (older code without it: ``enqueue`` per row, as its fan-outs did) against pgqueuer's
  ``Queries.enqueue`` with lists.

Rounds interleave the four measurements (order rotated each round); medians. Round trips
are the statements asyncpg sent (query loggers, every connection: claims, marks, BEGIN and
COMMIT, the pool's reset on release, pgqueuer's own queries); commits are the database's
``xact_commit`` delta.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.cost_floor import (
    RoundTrips,
    Series,
    add_common_args,
    code_dir,
    code_label,
    commits,
    fmt,
    interleave,
    machine_line,
    results_suffix,
    scratch_database,
    settle,
    write_results,
)

CODE = code_dir()

import asyncpg  # noqa: E402

from bot.i18n import create_i18n  # noqa: E402
from bot.notification_texts import make_renderer  # noqa: E402
from database import outbox  # noqa: E402
from database.pool import create_pool  # noqa: E402
from recovery.notifications import NotificationRetryManager  # noqa: E402
from recovery.rate_limit import TelegramRateLimiter  # noqa: E402

ROUND_TRIPS = RoundTrips()
PAYLOAD = b'{"text": "hello"}'


async def noop_send(chat_id: int, text: str, **_: Any) -> int:
    return 1


async def seed_outbox(pool: asyncpg.Pool, rows: int, tag: str) -> None:
    await pool.execute(
        "INSERT INTO pending_notifications (idempotency_key, chat_id, template_key, params) "
        "SELECT $1 || n, 100000 + n % 1000, 'admin.text', jsonb_build_object('text', 'n' || n) "
        "FROM generate_series(1, $2) AS n",
        tag,
        rows,
    )


async def ours_drain(pool: asyncpg.Pool, rows: int, tag: str) -> dict[str, float]:
    await pool.execute("TRUNCATE pending_notifications, notification_retry_queue")
    await seed_outbox(pool, rows, tag)
    manager = NotificationRetryManager(
        pool, sender=noop_send, renderer=make_renderer(create_i18n("en")),
        rate_limiter=TelegramRateLimiter(enabled=False), batch_size=50, concurrency=8,
        instance_id=f"bench-{tag}",
    )  # fmt: skip
    return await _timed(pool, rows, lambda: manager.drain(max_batches=10**9),
                        check=lambda r: r.sent == rows)  # fmt: skip


async def ours_enqueue(pool: asyncpg.Pool, rows: int, tag: str) -> dict[str, float]:
    await pool.execute("TRUNCATE pending_notifications, notification_retry_queue")
    items = [(f"{tag}:{n}", 100000 + n % 1000, {"text": f"n{n}"}) for n in range(rows)]

    async def enqueue() -> int:
        async with pool.acquire() as conn, conn.transaction():
            if hasattr(outbox, "enqueue_many"):
                return await outbox.enqueue_many(
                    conn, [outbox.Notification(k, c, "admin.text", p) for k, c, p in items]
                )
            count = 0
            for key, chat, params in items:
                added = await outbox.enqueue(
                    conn, idempotency_key=key, chat_id=chat, template_key="admin.text",
                    params=params,
                )  # fmt: skip
                count += added is not None
            return count

    return await _timed(pool, rows, enqueue, check=lambda n: n == rows)


class PgQueuer:
    """pgqueuer on its own asyncpg connection (its driver takes one connection)."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def setup(self) -> None:
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.queries import Queries

        conn = await asyncpg.connect(self.url)
        try:
            await Queries(AsyncpgDriver(conn)).install()
        finally:
            await conn.close()

    async def drain(self, pool: asyncpg.Pool, rows: int, tag: str) -> dict[str, float]:
        from pgqueuer import QueueManager
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.queries import Queries
        from pgqueuer.types import QueueExecutionMode

        await pool.execute("TRUNCATE pgqueuer, pgqueuer_log")
        conn = await asyncpg.connect(self.url)
        driver = AsyncpgDriver(conn)
        await Queries(driver).enqueue(["noop"] * rows, [PAYLOAD] * rows, [0] * rows)
        qm = QueueManager(Queries(driver))
        done = 0

        @qm.entrypoint("noop")
        async def noop(job: Any) -> None:
            nonlocal done
            done += 1

        async def run() -> int:
            await qm.run(
                batch_size=50, mode=QueueExecutionMode.drain,
                dequeue_timeout=timedelta(seconds=0.05),
                log_aggregation_interval=timedelta(0),
            )  # fmt: skip
            return done

        try:
            return await _timed(pool, rows, run, check=lambda n: n == rows)
        finally:
            if not conn.is_closed():
                await conn.close()

    async def enqueue(self, pool: asyncpg.Pool, rows: int, tag: str) -> dict[str, float]:
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.queries import Queries

        await pool.execute("TRUNCATE pgqueuer, pgqueuer_log")
        conn = await asyncpg.connect(self.url)
        queries = Queries(AsyncpgDriver(conn))

        async def enqueue() -> int:
            async with conn.transaction():
                ids = await queries.enqueue(["noop"] * rows, [PAYLOAD] * rows, [0] * rows)
            return len(ids)

        try:
            return await _timed(pool, rows, enqueue, check=lambda n: n == rows)
        finally:
            await conn.close()


async def _timed(pool: asyncpg.Pool, rows: int, work: Any, check: Any) -> dict[str, float]:
    async with pool.acquire() as conn:
        await asyncio.sleep(1.1)  # let the backends report their statistics
        before = await commits(conn)
    with ROUND_TRIPS.counting():
        started = time.perf_counter()
        outcome = await work()
        seconds = time.perf_counter() - started
        await settle()
        statements = ROUND_TRIPS.statements
    assert check(outcome), outcome
    async with pool.acquire() as conn:
        await asyncio.sleep(1.1)
        after = await commits(conn) - 2  # the two statistics reads themselves
    return {
        "rows/s": rows / seconds,
        "round trips/row": statements / rows,
        "commits/row": (after - before) / rows,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    ROUND_TRIPS.install()
    with scratch_database("bench_outbox") as url:
        pgq = PgQueuer(url)
        await pgq.setup()
        pool = await create_pool(url, min_size=2, max_size=10)
        try:
            variants = {
                "drain: outbox": lambda tag: ours_drain(pool, args.rows, tag),
                "drain: pgqueuer": lambda tag: pgq.drain(pool, args.rows, tag),
                "batch enqueue: outbox": lambda tag: ours_enqueue(pool, args.rows, tag),
                "batch enqueue: pgqueuer": lambda tag: pgq.enqueue(pool, args.rows, tag),
            }
            await variants["drain: outbox"]("warm")  # statements prepared, caches warm
            await variants["drain: pgqueuer"]("warm")
            results: dict[str, dict[str, Series]] = {}
            for round_no, order in interleave(args.rounds, list(variants)):
                for name in order:
                    figures = await variants[name](f"r{round_no}")
                    for key, value in figures.items():
                        results.setdefault(name, {}).setdefault(key, Series()).values.append(value)
            return results
        finally:
            await pool.close()


def report(results: dict[str, dict[str, Series]], args: argparse.Namespace, elapsed: float) -> str:
    lines = [
        "# Outbox benchmark: the notification outbox against pgqueuer",
        "",
        f"Written by `bench/bench_outbox.py` ({time.strftime('%Y-%m-%d %H:%M')}); code: "
        f"{code_label(CODE)}. {machine_line()}; PostgreSQL on the same host, one scratch "
        "database holding both queues.",
        "",
        f"{args.rows:,} rows per run; {args.rounds} rounds, the four runs interleaved (order "
        "rotated each round); medians. Drain: batch 50, the outbox with 8 sends in flight and "
        "a no-op send, pgqueuer with a no-op entrypoint (`mode=drain`).",
        "",
        "| run | rows/s (median) | ratio to pgqueuer | round trips / row | commits / row "
        "| rounds, rows/s |",
        "|---|---|---|---|---|---|",
    ]
    for kind in ("drain", "batch enqueue"):
        ours, theirs = results[f"{kind}: outbox"], results[f"{kind}: pgqueuer"]
        for name, figures in ((f"{kind}: outbox", ours), (f"{kind}: pgqueuer", theirs)):
            rate = figures["rows/s"].median
            ratio = rate / theirs["rows/s"].median
            lines.append(
                f"| {name} | {fmt(rate)} | {ratio:.2f}x "
                f"| {figures['round trips/row'].median:.4f} "
                f"| {figures['commits/row'].median:.4f} "
                f"| {', '.join(fmt(v) for v in figures['rows/s'].values)} |"
            )
    lines += ["", f"Total benchmark time: {elapsed:.0f} s.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()
    started = time.perf_counter()
    results = asyncio.run(run(args))
    text = report(results, args, time.perf_counter() - started)
    write_results("outbox", text, results_suffix(CODE))


if __name__ == "__main__":
    main()
