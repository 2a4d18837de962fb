"""End-to-end fixtures: the Bot API fake in this process, the bot as a real process.

``bot_process`` starts ``python -m bot`` (the same entry point ops use) with
``TELEGRAM_API_URL`` pointing at the fake and ``DATABASE_URL`` at a fresh migrated database,
waits until it long-polls, and stops it with SIGTERM afterwards. Its log is attached to the
failure report of a test that fails.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import asyncpg
import pytest
import pytest_asyncio

from database.pool import create_pool
from tests.fakes.telegram_api import DEFAULT_TOKEN, FakeTelegramAPI

if TYPE_CHECKING:
    from tests.e2e.instances import Cluster

ROOT = Path(__file__).resolve().parents[2]
ADMIN_ID = 555_000_001
STRANGER_ID = 777_000_001

# Settings the bot process must not inherit from the developer's environment.
_SCRUBBED = ("DATABASE_URL", "REDIS_URL", "WEBHOOK_URL", "ADMIN_IDS", "TELEGRAM_API_URL")


def bot_env(database_url: str, api_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment of a bot process under test."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env.update(
        BOT_TOKEN=DEFAULT_TOKEN,
        TELEGRAM_API_URL=api_url,
        DATABASE_URL=database_url,
        DATA_DIR=str(data_dir),
        ADMIN_IDS=str(ADMIN_ID),
        LOG_LEVEL="INFO",
        NOTIFICATION_POLL_INTERVAL_S="0.2",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@dataclass
class BotProcess:
    """A running ``python -m bot`` and where its log goes."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        """Everything the process wrote so far."""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120.0) -> str:
    """Run ``python -m bot <args>`` to completion; returns stdout. Raises on failure."""
    result = subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(f"python -m bot {args} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def spawn_bot(env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m bot`` with ``env``, its output going to ``log_path``."""
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "bot"],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


@pytest_asyncio.fixture
async def fake_api() -> AsyncIterator[FakeTelegramAPI]:
    """The Bot API fake, listening on a free port."""
    api = FakeTelegramAPI(token=DEFAULT_TOKEN)
    await api.start()
    try:
        yield api
    finally:
        await api.stop()


StartBot = Callable[..., Awaitable[BotProcess]]


@pytest_asyncio.fixture
async def start_bot(
    fake_api: FakeTelegramAPI,
    database_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> AsyncIterator[StartBot]:
    """Factory: ``await start_bot(**env_overrides)`` starts the bot and waits for polling."""
    processes: list[BotProcess] = []

    async def start(**extra: str) -> BotProcess:
        log_path = tmp_path / f"bot-{len(processes)}.log"
        env = bot_env(database_url, fake_api.base_url, tmp_path / "data", **extra)
        process = spawn_bot(env, log_path)
        bot = BotProcess(process, log_path)
        processes.append(bot)
        polls_before = fake_api.poll_count
        try:
            await fake_api.wait_for(
                lambda: fake_api.poll_count > polls_before or process.poll() is not None, 60
            )
        except AssertionError as exc:
            raise AssertionError(f"bot did not start polling:\n{bot.log()}") from exc
        if process.poll() is not None:
            raise AssertionError(f"bot exited with {process.returncode}:\n{bot.log()}")
        return bot

    yield start
    for bot in processes:
        await asyncio.to_thread(bot.stop)
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"--- bot log {bot.log_path.name} ---\n{bot.log()}")


@pytest_asyncio.fixture
async def cluster(
    database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Cluster]:
    """Webhook instances on the test database, stopped at the end (logs on failure)."""
    from tests.e2e.instances import Cluster  # it builds on this module's bot_env/spawn_bot

    async with aiohttp.ClientSession() as session:
        group = Cluster(database_url, tmp_path, session)
        try:
            yield group
        finally:
            await group.stop_all()
            report = getattr(request.node, "rep_call", None)
            if report is not None and report.failed:
                print(group.logs())


@pytest_asyncio.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """The test's own connection pool on the bots' database."""
    pool = await create_pool(database_url, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def cli_env(fake_api: FakeTelegramAPI, database_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for ``python -m bot seed-demo`` on the test database."""
    return bot_env(database_url, fake_api.base_url, tmp_path / "data")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Remember each phase's report on the test item (used to print the bot log)."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
