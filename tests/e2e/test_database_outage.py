"""PostgreSQL stopped with an immediate shutdown for ~20 s under a running ``python -m bot``
while users send commands and press buttons, then started again.

Every update gets an answer and every callback query exactly one; every error reference a
user was shown resolves in ``error_records`` afterwards with the count of its occurrences;
the notification sender listens again, so a notification queued after the restart arrives
promptly (the poll interval is 30 s here: only LISTEN can deliver it that fast); admins get
exactly one outage alert; SIGTERM then ends the process with exit code 0 and no traceback.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from database import outbox
from database.migrate import upgrade_to_head
from database.pool import create_pool
from tests.e2e.conftest import ADMIN_ID, BotProcess, bot_env, spawn_bot
from tests.fakes.telegram_api import FakeTelegramAPI
from tests.pg_server import PostgresServer

pytestmark = pytest.mark.e2e

OUTAGE_S = 20.0
REFERENCE = re.compile(r"E-[A-Z2-9]{6}")
ALERT_MARK = "database was unreachable"
PRESSERS = [886_000_000 + n for n in range(8)]  # press a language button during the outage
PROMPT_DELIVERY_S = 2.0  # the bound the outage issue states for LISTEN after a restart
SETTINGS = {
    "OUTAGE_ALERT_DATABASE_S": "5",
    "NOTIFICATION_POLL_INTERVAL_S": "30",
    "SHUTDOWN_GRACE_S": "5",
    "DB_COMMAND_TIMEOUT_S": "5",
}


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test alone (a short path: its socket lives there)."""
    directory = Path(tempfile.mkdtemp(prefix="pgo"))
    pg = PostgresServer(directory / "pg")
    pg.init()
    pg.start()
    try:
        yield pg
    finally:
        with contextlib.suppress(AssertionError):  # already stopped
            pg.stop("immediate")


@pytest_asyncio.fixture
async def bot_url(server: PostgresServer) -> AsyncIterator[str]:
    """A database at the migration head on the test's own server."""
    conn = await asyncpg.connect(server.dsn)
    try:
        await conn.execute("CREATE DATABASE bot")
    finally:
        await conn.close()
    url = server.url("bot")
    await asyncio.to_thread(upgrade_to_head, url)
    yield url


async def test_the_bot_rides_out_a_database_outage(
    fake_api: FakeTelegramAPI,
    server: PostgresServer,
    bot_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    env = bot_env(bot_url, fake_api.base_url, tmp_path / "data", **SETTINGS)
    log_path = tmp_path / "bot.log"
    bot = BotProcess(spawn_bot(env, log_path), log_path)
    try:
        await _scenario(fake_api, server, bot_url, bot)
    except BaseException:
        print(f"--- bot log ---\n{bot.log()}\n--- server log ---\n{server.log()[-4000:]}")
        raise
    finally:
        bot.stop()


async def _scenario(
    api: FakeTelegramAPI, server: PostgresServer, url: str, bot: BotProcess
) -> None:
    api.add_user(ADMIN_ID, "Admin")  # the outage alert's recipient (ADMIN_IDS)
    await api.wait_for(lambda: api.poll_count > 0 or bot.process.poll() is not None, 60)
    assert bot.process.poll() is None, bot.log()
    for user in PRESSERS:  # each gets the language keyboard while the database is up
        api.push_message(user, "/language")
    await api.wait_for(lambda: all(_buttons(api, user) for user in PRESSERS), 30)

    server.stop("immediate")
    down_at = time.time()
    pushed: list[int] = []  # chats with one message each during the outage
    queries: list[str] = []
    n = 0
    while time.time() - down_at < OUTAGE_S:
        user = 887_000_000 + n
        api.push_message(user, "/start" if n % 2 else "/new")
        pushed.append(user)
        presser = PRESSERS[n % len(PRESSERS)]
        update = api.push_callback(presser, _buttons(api, presser)[n % 2])
        queries.append(update["callback_query"]["id"])
        n += 1
        await asyncio.sleep(1.0)
    server.start()

    # every update answered, every callback query exactly once
    await api.wait_for(lambda: all(_answered(api, chat) for chat in pushed), 60)
    await api.wait_for(lambda: _answers(api).keys() >= set(queries), 60)
    counts = _answers(api)
    assert all(counts[q] == 1 for q in queries), {q: counts[q] for q in queries}

    # one alert after the database is back
    await api.wait_for(lambda: _alerts(api), 60)

    # the sender listens again: a notification queued now arrives at once
    pool = await create_pool(url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await outbox.enqueue(
                conn, idempotency_key="after-outage", chat_id=ADMIN_ID,
                template_key="admin.text", params={"text": "after the outage"},
            )  # fmt: skip
        committed_at = time.time()
        arrival = await api.wait_for(lambda: _arrival(api, "after the outage"), 30)
        assert arrival - committed_at < PROMPT_DELIVERY_S, arrival - committed_at

        # every reference shown resolves, with the count of its occurrences
        shown = _references(api, pushed + PRESSERS)
        assert shown, "the users were shown error references during the outage"
        await _wait_recorded(pool, shown)
    finally:
        await pool.close()

    await asyncio.sleep(3)  # a second alert would have come by now
    alerts = _alerts(api)
    assert len(alerts) == 1, alerts
    # the updates of the outage: all but those pushed before the first failed probe
    affected = re.search(r"(\d+) updates? arrived meanwhile", alerts[0])
    assert affected and int(affected.group(1)) >= len(pushed) + len(queries) - 4, alerts[0]

    code = await asyncio.to_thread(bot.stop)
    log = bot.log()
    assert code == 0, log[-3000:]
    assert "Traceback" not in log.split("outage started")[-1].split("stopping")[-1], log[-3000:]


def _buttons(api: FakeTelegramAPI, user: int) -> list[str]:
    message = api.last_message(user)
    rows = (message or {}).get("reply_markup", {}).get("inline_keyboard", [])
    return [b["callback_data"] for row in rows for b in row if "callback_data" in b]


def _answered(api: FakeTelegramAPI, chat: int) -> bool:
    return any(c.ok and c.params.get("chat_id") == chat for c in api.calls("sendMessage"))


def _answers(api: FakeTelegramAPI) -> collections.Counter[str]:
    return collections.Counter(a.query_id for a in api.callback_answers)


def _alerts(api: FakeTelegramAPI) -> list[str]:
    texts = [m.get("text", "") for m in api.messages_to(ADMIN_ID)]
    return [t for t in texts if ALERT_MARK in t.lower()]


def _arrival(api: FakeTelegramAPI, text: str) -> float | None:
    for call in api.calls("sendMessage"):
        if call.ok and text in str(call.params.get("text", "")):
            return call.timestamp
    return None


def _references(api: FakeTelegramAPI, chats: list[int]) -> collections.Counter[str]:
    """How many times each error reference was shown to these users (messages and
    callback answers)."""
    texts = [str(c.params.get("text", "")) for c in api.calls("sendMessage")
             if c.ok and c.params.get("chat_id") in chats]  # fmt: skip
    texts += [a.text or "" for a in api.callback_answers]
    return collections.Counter(ref for text in texts for ref in REFERENCE.findall(text))


async def _wait_recorded(pool: asyncpg.Pool, shown: collections.Counter[str]) -> None:
    deadline = time.monotonic() + 30
    while True:
        rows = await pool.fetch(
            "SELECT reference, occurrence_count FROM error_records WHERE reference = ANY($1)",
            list(shown),
        )
        recorded = {r["reference"]: r["occurrence_count"] for r in rows}
        if recorded.keys() == shown.keys() or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    missing = set(shown) - set(recorded)
    assert not missing, f"references shown but not recorded: {sorted(missing)}"
    for reference, times in shown.items():
        assert recorded[reference] >= times, (reference, recorded[reference], times)
