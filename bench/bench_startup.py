"""Benchmark: start-up of the bot against a bare aiogram bot, process start to ready.

Run: ``.venv/bin/python -m bench.bench_startup [--rounds 7] [--code DIR]``
(``BENCH_DATABASE_URL`` names the server; a scratch database migrated to head is created and
dropped). Writes ``bench/results/startup.md`` (``--code`` elsewhere: ``startup-<dir>.md``).

Each run is a new Python process that exits when it is ready to take updates (nothing is
sent to Telegram, so no network):

- *bare aiogram*: imports aiogram and asyncpg, opens an asyncpg pool on the database, builds
  a ``Bot`` and a ``Dispatcher`` with one router;
- *project*: what ``bot.lifecycle.BotInstance`` does before polling: settings from the
  environment (``DATABASE_URL`` set), the schema check against the alembic head
  (``bot.app.resolve_database_url``), the pool, the services and the dispatcher with every
  router and middleware.

The two kinds of process alternate (order rotated each round); medians.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

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

BARE = """
import asyncio, os
import asyncpg
from aiogram import Bot, Dispatcher, Router
from aiogram.filters import Command

async def main():
    pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=1, max_size=10)
    bot = Bot(os.environ["BOT_TOKEN"])
    router = Router()

    @router.message(Command("ping"))
    async def ping(message):
        await message.answer("pong")

    dp = Dispatcher()
    dp.include_router(router)
    await pool.close()
    await bot.session.close()

asyncio.run(main())
"""

PROJECT = """
import asyncio, sys
sys.path.insert(0, {code!r})
from bot.settings import Settings
from bot.lifecycle import BotInstance
from bot.app import build_dispatcher, build_services, create_bot, resolve_database_url
from bot.i18n import create_i18n
from bot.metrics import Metrics
from database.pool import create_pool

async def main():
    settings = Settings(_env_file=None)
    instance = BotInstance(settings)
    bot = create_bot(settings)
    url = await resolve_database_url(settings)
    pool = await create_pool(url, min_size=settings.db_pool_min_size,
                             max_size=settings.db_pool_max_size)
    metrics = Metrics(instance.instance_id, "polling")
    services = build_services(settings, pool, create_i18n(settings.default_locale), bot, metrics)
    build_dispatcher(services)
    await pool.close()
    await bot.session.close()

asyncio.run(main())
"""


def run_once(script: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", script], env=env, check=True, cwd="/")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    args = parser.parse_args()
    started = time.perf_counter()
    with scratch_database("bench_startup") as url:
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "BOT_TOKEN": "123456:AAbbCCddEEffGGhhIIjjKKllMMnnOOppQQr",
            "SCHEDULER_ENABLED": "false",
        }
        scripts = {"bare aiogram": BARE, "project": PROJECT.format(code=str(CODE))}
        for script in scripts.values():  # warm the file cache
            run_once(script, env)
        series = {name: Series() for name in scripts}
        for _, order in interleave(args.rounds, list(scripts)):
            for name in order:
                series[name].values.append(run_once(scripts[name], env) * 1000)
    base = series["bare aiogram"].median
    lines = [
        "# Start-up benchmark: the bot against a bare aiogram bot",
        "",
        f"Written by `bench/bench_startup.py` ({time.strftime('%Y-%m-%d %H:%M')}); code: "
        f"{code_label(CODE)}. {machine_line()}; PostgreSQL on the same host.",
        "",
        f"New process per run, from its start until it is ready to take updates; "
        f"{args.rounds} rounds alternating (order rotated); medians.",
        "",
        "| process | ms to ready (median) | ratio to bare aiogram | rounds (ms) |",
        "|---|---|---|---|",
    ]
    for name, s in series.items():
        lines.append(
            f"| {name} | {fmt(s.median)} | {s.median / base:.2f}x "
            f"| {', '.join(fmt(v) for v in s.values)} |"
        )
    lines += ["", f"Total benchmark time: {time.perf_counter() - started:.0f} s.", ""]
    write_results("startup", "\n".join(lines), results_suffix(CODE))


if __name__ == "__main__":
    main()
