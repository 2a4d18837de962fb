"""Benchmark: one Telegram update through the project's whole dispatcher against bare
aiogram with the same trivial handler, and the database round trips per update.

Run: ``.venv/bin/python -m bench.bench_dispatch [--rounds 7] [--updates 2000]
[--code DIR]`` (``BENCH_DATABASE_URL`` names the PostgreSQL server, default the local
one; a scratch database is created and dropped). Prints the figures and writes
``bench/results/dispatch.md`` (``--code`` elsewhere: ``dispatch-<dir name>.md``).

Variants, fed the same ``/ping`` messages from 50 registered users, one update at a time,
with a ``Bot`` on the in-process session double (``tests/fakes/bot_session.py``: no
network; the reply goes through aiogram's request building and response parsing):

- *bare aiogram*: ``Dispatcher()`` (memory FSM storage) with one router whose handler
  answers ``/ping`` with ``message.answer("pong")``;
- *project, polling*: ``bot.app.build_dispatcher`` as ``bot.lifecycle`` wires it in polling
  mode (update tracking with metrics, the error middleware, user loading from PostgreSQL
  or, for a client whose row did not change, from the process's user cache with its LISTEN
  running, i18n, every router), the same handler in a router included last, so the update is offered
  to every router and filter of the bot first (the worst case);
- *project, polling, handler first*: the same, the handler in a router asked before the
  bot's routers (the cost of the middlewares alone);
- *project, webhook*: the worst case with the update-id claim (``processed_updates``) that
  webhook mode makes.

Rounds interleave the variants (order rotated each round); medians of the rounds. A last
pass counts the statements sent to PostgreSQL per update (asyncpg query loggers), the
thread hops (``asyncio.to_thread``) and aiogram's event propagations and filter checks.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
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
    fmt,
    interleave,
    machine_line,
    results_suffix,
    scratch_database,
    settle,
    write_results,
)

CODE = code_dir()

from aiogram import Bot, Dispatcher, Router  # noqa: E402
from aiogram.dispatcher.event.handler import HandlerObject  # noqa: E402
from aiogram.dispatcher.router import Router as _Router  # noqa: E402
from aiogram.filters import Command  # noqa: E402
from aiogram.fsm.storage.memory import MemoryStorage  # noqa: E402
from aiogram.types import Message, Update  # noqa: E402

from bot import lifecycle  # noqa: E402
from bot.app import build_dispatcher, build_services  # noqa: E402
from bot.i18n import create_i18n  # noqa: E402
from bot.metrics import Metrics  # noqa: E402
from bot.settings import Settings  # noqa: E402
from database import processed_updates  # noqa: E402
from database.pool import create_pool  # noqa: E402
from handlers import fallback  # noqa: E402
from middlewares.updates import UpdateTrackingMiddleware  # noqa: E402
from tests.fakes.bot_session import FakeBotSession  # noqa: E402

try:
    from recovery.update_claims import UpdateClaims
except ImportError:  # older code (--code)
    UpdateClaims = None  # type: ignore[assignment,misc]
if not hasattr(processed_updates, "claim_many"):  # older code: this tree's module would fail
    UpdateClaims = None  # type: ignore[assignment,misc]
from tests.fakes.telegram_api import DEFAULT_TOKEN  # noqa: E402

USERS = 50
ROUND_TRIPS = RoundTrips()
_update_ids = itertools.count(1)

# Older code claimed the update id in both modes; ``bot.lifecycle`` now says where it does.
CLAIM_MODES = getattr(lifecycle, "CLAIM_UPDATES_IN", frozenset({"polling", "webhook"}))


def ping_router(command: str = "ping") -> Router:
    router = Router(name=f"bench_{command}")

    @router.message(Command(command))
    async def ping(message: Message) -> None:
        await message.answer("pong")

    return router


def make_update(bot: Bot, command: str = "ping") -> Update:
    n = next(_update_ids)
    user_id = 700_000_000 + n % USERS
    return Update.model_validate(
        {
            "update_id": n,
            "message": {
                "message_id": n,
                "date": int(time.time()),
                "chat": {"id": user_id, "type": "private", "first_name": "U"},
                "from": {"id": user_id, "is_bot": False, "first_name": "U", "language_code": "en"},
                "text": f"/{command}",
            },
        },
        context={"bot": bot},
    )


class ProjectStack:
    """The project's dispatcher (its routers attach to one dispatcher per process), in
    polling or webhook mode: the mode decides whether the update tracker claims ids."""

    def __init__(self, services: Any, pool: Any) -> None:
        async def claim(update_id: int) -> bool:
            return await processed_updates.claim(pool, update_id, "bench")

        # claims as bot.lifecycle makes them: grouped on a held connection where the code
        # has recovery.update_claims, one pool.fetchval each in older code
        self.claims = UpdateClaims(pool, "bench") if UpdateClaims is not None else None
        self._claim = self.claims.claim if self.claims is not None else claim
        self.tracker = UpdateTrackingMiddleware(Metrics("bench", "polling"), claim=None)
        self.dp = build_dispatcher(
            services, storage=MemoryStorage(), outer_middlewares=[self.tracker]
        )
        # the bot's last router (handlers.fallback) answers every message nobody else took:
        # the handler goes just before it, after every other router of the bot
        last = ping_router()
        root = fallback.router.parent_router or self.dp
        root.include_router(last)
        root.sub_routers.remove(last)
        root.sub_routers.insert(root.sub_routers.index(fallback.router), last)
        first = ping_router("first")  # the same handler in a router asked before the bot's
        self.dp.include_router(first)
        self.dp.sub_routers.remove(first)
        self.dp.sub_routers.insert(0, first)

    def mode(self, mode: str) -> Dispatcher:
        self.tracker.claim = self._claim if mode in CLAIM_MODES else None
        return self.dp


class Probe:
    """Counts thread hops, event propagations and filter checks (patched into aiogram for
    the counting pass only)."""

    def __init__(self) -> None:
        self.threads = self.propagations = self.filters = 0

    def install(self) -> None:
        real_to_thread = asyncio.to_thread
        real_propagate = _Router.propagate_event
        real_check = HandlerObject.check
        probe = self

        async def to_thread(func: Any, /, *args: Any, **kwargs: Any) -> Any:
            probe.threads += 1
            return await real_to_thread(func, *args, **kwargs)

        async def propagate_event(self: Any, update_type: str, event: Any, **kwargs: Any) -> Any:
            probe.propagations += 1
            return await real_propagate(self, update_type, event, **kwargs)

        async def check(self: Any, *args: Any, **kwargs: Any) -> Any:
            probe.filters += len(self.filters or ())
            return await real_check(self, *args, **kwargs)

        asyncio.to_thread = to_thread  # type: ignore[assignment]
        _Router.propagate_event = propagate_event  # type: ignore[method-assign]
        HandlerObject.check = check  # type: ignore[method-assign]


async def feed(dp: Dispatcher, bot: Bot, updates: list[Update]) -> float:
    started = time.perf_counter()
    for update in updates:
        await dp.feed_update(bot, update)
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> dict[str, Any]:
    ROUND_TRIPS.install()
    with scratch_database("bench_dispatch") as url:
        pool = await create_pool(url, min_size=2, max_size=10)
        try:
            return await measure(args, pool)
        finally:
            await pool.close()


async def measure(args: argparse.Namespace, pool: Any) -> dict[str, Any]:
    settings = Settings(_env_file=None, bot_token=DEFAULT_TOKEN, admin_ids=[555_000_001])
    session = FakeBotSession()
    bot = Bot(DEFAULT_TOKEN, session=session)
    services = build_services(settings, pool, create_i18n("en"), bot, Metrics("bench", "x"))
    # the user cache's LISTEN, as bot.lifecycle supervises it (older code has no cache)
    cache = getattr(services, "user_cache", None)
    listening = asyncio.create_task(cache.run()) if cache is not None else None
    project = ProjectStack(services, pool)
    try:
        for _ in range(500):  # up to 5 s for the LISTEN to be up
            if cache is None or cache.live:
                break
            await asyncio.sleep(0.01)
        return await _measure(args, bot, session, project)
    finally:
        if project.claims is not None:
            await project.claims.close()
        if listening is not None:
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)


async def _measure(
    args: argparse.Namespace, bot: Bot, session: Any, project: ProjectStack
) -> dict[str, Any]:
    bare = Dispatcher(storage=MemoryStorage())
    bare.include_router(ping_router())
    stacks = {
        "bare aiogram": lambda: bare,
        "project, polling, handler first": lambda: project.mode("polling"),
        "project, polling": lambda: project.mode("polling"),
        "project, webhook": lambda: project.mode("webhook"),
    }
    commands = {"project, polling, handler first": "first"}
    for name, dp in stacks.items():  # warm-up: users registered, statements prepared
        command = commands.get(name, "ping")
        await feed(dp(), bot, [make_update(bot, command) for _ in range(3 * USERS)])
    series = {name: Series() for name in stacks}
    for _, order in interleave(args.rounds, list(stacks)):
        for name in order:
            command = commands.get(name, "ping")
            updates = [make_update(bot, command) for _ in range(args.updates)]
            seconds = await feed(stacks[name](), bot, updates)
            series[name].values.append(seconds / args.updates * 1e6)
    replies = [call.text for call in session.calls if type(call).__name__ == "SendMessage"]
    fed = 3 * USERS * len(stacks) + args.rounds * args.updates * len(stacks)
    assert len(replies) == fed, (len(replies), fed)
    # every update reached the benchmark's handler (not the bot's catch-all fallback)
    assert set(replies) == {"pong"}, set(replies) - {"pong"}

    counts: dict[str, dict[str, float]] = {}
    probe = Probe()
    probe.install()
    n = 500
    for name, dp in stacks.items():
        probe.threads = probe.propagations = probe.filters = 0
        updates = [make_update(bot, commands.get(name, "ping")) for _ in range(n)]
        with ROUND_TRIPS.counting():
            await feed(dp(), bot, updates)
            await settle()
        counts[name] = {
            "round trips": ROUND_TRIPS.statements / n,
            "thread hops": probe.threads / n,
            "propagations": probe.propagations / n,
            "filter checks": probe.filters / n,
        }
        counts[name]["statements"] = dict(ROUND_TRIPS.by_text)  # type: ignore[assignment]
    return {"series": series, "counts": counts}


def report(result: dict[str, Any], args: argparse.Namespace, elapsed: float) -> str:
    series: dict[str, Series] = result["series"]
    counts = result["counts"]
    base = series["bare aiogram"].median
    lines = [
        "# Dispatch benchmark: the project's dispatcher against bare aiogram",
        "",
        f"Written by `bench/bench_dispatch.py` ({time.strftime('%Y-%m-%d %H:%M')}); code: "
        f"{code_label(CODE)}. {machine_line()}; PostgreSQL on the same host; Bot API: the "
        "in-process session double.",
        "",
        f"{args.updates} `/ping` updates per variant per round, fed one at a time; "
        f"{args.rounds} rounds, variants interleaved (order rotated each round); medians. "
        "The project's handler sits in a router included last (every router and filter of "
        "the bot is asked first: the worst case), or, in *handler first*, in a router asked "
        "before the bot's own (the best case: middlewares and data, little routing).",
        "",
        "| variant | µs per update (median) | ratio to bare aiogram | DB round trips / update "
        "| thread hops | propagations | filter checks | rounds (µs) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in series.items():
        c = counts[name]
        lines.append(
            f"| {name} | {fmt(s.median)} | {s.median / base:.2f}x | {c['round trips']:.2f} "
            f"| {c['thread hops']:.2f} | {c['propagations']:.0f} | {c['filter checks']:.0f} "
            f"| {', '.join(fmt(v) for v in s.values)} |"
        )
    lines += ["", "Statements per variant in the counting pass (500 updates):", ""]
    for name in series:
        statements = counts[name]["statements"] or {"(none)": 0}
        lines.append(f"- {name}: " + "; ".join(f"`{text}` x{k}" for text, k in statements.items()))
    lines += ["", f"Total benchmark time: {elapsed:.0f} s.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--updates", type=int, default=2000, help="updates per variant per round")
    args = parser.parse_args()
    started = time.perf_counter()
    result = asyncio.run(run(args))
    text = report(result, args, time.perf_counter() - started)
    write_results("dispatch", text, results_suffix(CODE))


if __name__ == "__main__":
    main()
