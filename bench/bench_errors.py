"""Benchmark: identical errors recorded per second by ``ErrorHandler.handle`` against the
minimal upsert on the same table shape, sequentially and from 50 tasks; and a storm of
identical errors with its exact count and its lag.

Run: ``.venv/bin/python -m bench.bench_errors [--rounds 5] [--errors 2000]
[--storm 100000] [--code DIR]`` (``BENCH_DATABASE_URL`` names the server, default the local
one; a scratch database migrated by the measured code is created and dropped). Writes
``bench/results/errors.md`` (``--code`` elsewhere: ``errors-<dir name>.md``). Before/after:
``git archive main | tar -x -C /tmp/main-code`` and ``--code /tmp/main-code``.

- *handler*: ``errors`` calls of ``handle()`` with one exception raised 20 frames deep in
  the project's code (a trace of about 3 k characters), then ``flush()`` where the handler
  has one (the count is visible when the run ends); the handler's flush task runs where it
  has one. Sequential: one call after the other; 50 tasks: the same number split over 50
  concurrent tasks.
- *minimal upsert*: ``INSERT ... ON CONFLICT (fingerprint) DO UPDATE SET occurrence_count =
  occurrence_count + 1`` per error through a second pool of the project's (10 connections)
  into a copy of ``error_records`` (``LIKE ... INCLUDING ALL``: the measured code's columns
  and indexes). The scratch database commits asynchronously (``ALTER DATABASE ... SET
  synchronous_commit = off``), as the handler commits its error records anyway: the same
  durability on both sides (with synchronous commits the minimal upsert measures this
  machine's WAL flush, several ms here).
- *storm*: ``storm`` identical errors from 50 tasks with the flush task running; then the
  lag: from the last ``handle()`` returning until the stored count is exact (polled every
  millisecond).

Logging is off for every run (``logging.disable``): the recording path is measured, not
the log handlers. Every loop yields to the event loop after each error (``sleep(0)``, on
both sides), as separate updates do, so the flush task runs during the runs. Rounds
interleave the four measurements (order rotated); medians. Each run checks the stored count
grew by exactly the number of errors.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.cost_floor import (
    Series,
    add_common_args,
    code_dir,
    code_label,
    fmt,
    interleave,
    machine_line,
    results_suffix,
    scratch_database,
    write_results,
)

CODE = code_dir()

import asyncpg  # noqa: E402

from database.pool import create_pool  # noqa: E402
from recovery.errors import ErrorHandler  # noqa: E402
from recovery.exceptions import ConcurrentModificationError  # noqa: E402

TASKS = 50
# A random reference: with a constant one, 50 concurrent upserts of one row sometimes fail
# on the reference's unique index (not the ON CONFLICT arbiter) before seeing the conflict.
MINIMAL_SQL = """
INSERT INTO minimal_errors (reference, fingerprint, category, severity, error_type, message)
VALUES ('E-' || md5(random()::text), 'minimal', 'business_logic', 'low', 'x.Error', 'boom')
ON CONFLICT (fingerprint) DO UPDATE SET occurrence_count = minimal_errors.occurrence_count + 1
"""


def deep_error(depth: int = 20) -> BaseException:
    """One exception raised ``depth`` frames deep in this file (the project's code)."""

    def dive(n: int) -> None:
        if n:
            dive(n - 1)
        raise ConcurrentModificationError("request", 17, 3)

    try:
        dive(depth)
    except ConcurrentModificationError as exc:
        return exc
    raise AssertionError("no error")


async def stored_count(pool: asyncpg.Pool, table: str) -> int:
    return int(await pool.fetchval(f"SELECT coalesce(sum(occurrence_count), 0) FROM {table}"))


async def run_handler(handler: Any, pool: asyncpg.Pool, exc: BaseException, n: int,
                      tasks: int) -> float:  # fmt: skip
    before = await stored_count(pool, "error_records")
    started = time.perf_counter()
    if tasks == 1:
        for _ in range(n):
            await handler.handle(exc)
            await asyncio.sleep(0)
    else:

        async def worker(k: int) -> None:
            for _ in range(k):
                await handler.handle(exc)
                await asyncio.sleep(0)  # each error in its own turn of the loop

        await asyncio.gather(*(worker(n // tasks) for _ in range(tasks)))
    if hasattr(handler, "flush"):
        assert await handler.flush()
    elapsed = time.perf_counter() - started
    assert await stored_count(pool, "error_records") - before == n, "count not exact"
    return n / elapsed


async def run_minimal(pool: asyncpg.Pool, n: int, tasks: int) -> float:
    """``n`` minimal upserts (``MINIMAL_SQL``); errors/s."""
    before = await stored_count(pool, "minimal_errors")
    started = time.perf_counter()
    if tasks == 1:
        for _ in range(n):
            await pool.execute(MINIMAL_SQL)
            await asyncio.sleep(0)
    else:

        async def worker(k: int) -> None:
            for _ in range(k):
                await pool.execute(MINIMAL_SQL)
                await asyncio.sleep(0)

        await asyncio.gather(*(worker(n // tasks) for _ in range(tasks)))
    elapsed = time.perf_counter() - started
    assert await stored_count(pool, "minimal_errors") - before == n, "count not exact"
    return n / elapsed


async def run_storm(
    handler: Any, pool: asyncpg.Pool, exc: BaseException, n: int
) -> dict[str, float]:
    before = await stored_count(pool, "error_records")
    last = 0.0

    async def worker(k: int) -> None:
        nonlocal last
        for _ in range(k):
            await handler.handle(exc)
            await asyncio.sleep(0)
        last = max(last, time.perf_counter())

    started = time.perf_counter()
    await asyncio.gather(*(worker(n // TASKS) for _ in range(TASKS)))
    # polling is the measurement: the count is read until it is exact
    while await stored_count(pool, "error_records") - before < n:  # noqa: ASYNC110
        await asyncio.sleep(0.001)
    visible = time.perf_counter()
    exact = await stored_count(pool, "error_records") - before
    return {"rate": n / (last - started), "lag_s": visible - last, "exact": float(exact == n),
            "stored": float(exact)}  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    logging.disable(logging.CRITICAL)
    n = args.errors - args.errors % TASKS
    exc = deep_error()
    with scratch_database("bench_errors") as url:
        setup = await asyncpg.connect(url)
        name = urlsplit(url).path.lstrip("/")
        await setup.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
        await setup.close()
        pool = await create_pool(url, min_size=10, max_size=10)
        minimal = await create_pool(url, min_size=10, max_size=10)
        await pool.execute("CREATE TABLE minimal_errors (LIKE error_records INCLUDING ALL)")
        handler = ErrorHandler(pool, store_timeout_s=60)
        if hasattr(handler, "start"):
            handler.start()
        await handler.handle(exc)  # the group exists: every measured error is a repeat
        await pool.execute(MINIMAL_SQL)
        if hasattr(handler, "flush"):
            await handler.flush()
        variants = ["handler sequential", "minimal sequential", "handler 50 tasks",
                    "minimal 50 tasks"]  # fmt: skip
        series = {v: Series() for v in variants}
        started = time.perf_counter()
        for round_no, order in interleave(args.rounds, variants):
            for variant in order:
                tasks = TASKS if "50" in variant else 1
                if variant.startswith("handler"):
                    rate = await run_handler(handler, pool, exc, n, tasks)
                else:
                    rate = await run_minimal(minimal, n, tasks)
                series[variant].values.append(rate)
            print(f"round {round_no + 1}: " + ", ".join(
                f"{v} {fmt(series[v].values[-1])}/s" for v in variants))  # fmt: skip
        storm = await run_storm(handler, pool, exc, args.storm) if args.storm else None
        if hasattr(handler, "stop"):
            await handler.stop()
        await pool.close()  # backends report their statistics as they exit
        await minimal.close()
        await asyncio.sleep(1.0)
        conn = await asyncpg.connect(url)
        hot = await conn.fetchrow(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
            "WHERE relname = 'error_records'"
        )
        await conn.close()
    total = time.perf_counter() - started

    def ratio(a: str, b: str) -> str:
        return f"{series[a].median / series[b].median:.2f}x"

    lines = [
        "# Errors benchmark: identical errors recorded/s against the minimal upsert",
        "",
        f"Written by `bench/bench_errors.py` ({time.strftime('%Y-%m-%d %H:%M')}); code: "
        f"{code_label(CODE)}. {machine_line()}; PostgreSQL on the same host.",
        "",
        f"{n:,} identical errors per run (one exception 20 frames deep); {args.rounds} "
        "rounds, the four runs interleaved (order rotated each round); medians. Pool of 10 "
        "connections for both. Logging off. Each run checks the stored count grew by "
        "exactly the number of errors.",
        "",
        "| run | errors/s (median) | ratio handler / minimal | rounds, errors/s |",
        "|---|---|---|---|",
    ]
    for variant in variants:
        other = variant.replace("handler", "minimal")
        shown = ratio(variant, other) if variant.startswith("handler") else "1.00x"
        values = ", ".join(fmt(v) for v in series[variant].values)
        lines.append(f"| {variant} | {fmt(series[variant].median)} | {shown} | {values} |")
    lines.append("")
    if storm is not None:
        lines.append(
            f"Storm: {args.storm:,} identical errors from {TASKS} tasks recorded at "
            f"{fmt(storm['rate'])}/s; stored count {int(storm['stored']):,} "
            f"({'exact' if storm['exact'] else 'NOT exact'}); lag from the last occurrence "
            f"to the count being visible: {storm['lag_s'] * 1000:.0f} ms."
        )
        lines.append("")
    if hot is not None:
        lines.append(
            f"`error_records` updates in this database: {hot['n_tup_upd']:,}, of which HOT: "
            f"{hot['n_tup_hot_upd']:,} (pg_stat_user_tables, read after the pool closed)."
        )
        lines.append("")
    lines.append(f"Total benchmark time: {total:.0f} s.")
    write_results("errors", "\n".join(lines) + "\n", results_suffix(CODE))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(parser)
    parser.add_argument("--errors", type=int, default=2000, help="errors per run")
    parser.add_argument("--storm", type=int, default=100_000, help="storm size (0: none)")
    parsed = parser.parse_args()
    if parsed.rounds < 5:
        parser.error("--rounds must be at least 5")
    asyncio.run(main(parsed))
