"""Start-up paths of ``python -m bot``: embedded PostgreSQL, schema check, optional calls."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg

from tests.e2e.conftest import ROOT, StartBot, bot_env, spawn_bot
from tests.e2e.instances import free_port
from tests.fakes.telegram_api import FakeTelegramAPI


def _text(api: FakeTelegramAPI, chat_id: int) -> str:
    message = api.last_message(chat_id)
    return message["text"] if message else ""


async def test_survives_a_server_that_rejects_set_my_commands(
    fake_api: FakeTelegramAPI, start_bot: StartBot, database_url: str
) -> None:
    fake_api.reject_methods.add("setmycommands")
    await start_bot()
    fake_api.push_message(424242, "/start", first_name="Nodira")
    await fake_api.wait_for(lambda: "You are registered" in _text(fake_api, 424242))
    assert not fake_api.calls("setMyCommands")[0].ok
    conn = await asyncpg.connect(database_url)
    try:
        user = await conn.fetchrow("SELECT * FROM users WHERE telegram_id = 424242")
    finally:
        await conn.close()
    assert (user["role"], user["full_name"]) == ("client", "Nodira")


async def test_refuses_an_external_database_that_is_not_migrated(
    fake_api: FakeTelegramAPI, fresh_database_url: str, tmp_path: Path
) -> None:
    env = bot_env(fresh_database_url, fake_api.base_url, tmp_path / "data")
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bot"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert "alembic upgrade head" in result.stderr
    assert "Traceback" not in result.stderr
    assert fake_api.poll_count == 0


async def test_embedded_database_when_database_url_is_unset(
    fake_api: FakeTelegramAPI, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    env = bot_env("unused", fake_api.base_url, data_dir)
    del env["DATABASE_URL"]
    log_path = tmp_path / "embedded.log"
    process = spawn_bot(env, log_path)
    try:
        await fake_api.wait_for(
            lambda: fake_api.poll_count > 0 or process.poll() is not None, timeout=120
        )
        assert process.poll() is None, log_path.read_text()
        fake_api.push_message(515151, "/start")
        await fake_api.wait_for(lambda: "You are registered" in _text(fake_api, 515151))
        assert (data_dir / "pgdata" / "PG_VERSION").exists()
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 30)
    assert process.returncode == 0, log_path.read_text()


async def test_a_token_telegram_rejects_stops_with_one_line(
    fake_api: FakeTelegramAPI, database_url: str, tmp_path: Path
) -> None:
    # a well-formed token of no bot: the fake answers 401 Unauthorized, as Telegram does
    token = "987654321:AAHrejectedTokenOfNoBot0123456789xyz"
    env = bot_env(database_url, fake_api.base_url, tmp_path / "data", BOT_TOKEN=token)
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bot"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "BOT_TOKEN was rejected by Telegram" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert token.split(":")[1] not in result.stderr + result.stdout  # never printed
    assert fake_api.poll_count == 0


async def test_telegram_away_at_start_is_waited_for_without_a_crash(
    fake_api: FakeTelegramAPI, database_url: str, tmp_path: Path
) -> None:
    # nothing listens on this port: every Bot API call fails with a network error
    closed = f"http://127.0.0.1:{free_port()}"
    log_path = tmp_path / "bot.log"
    process = spawn_bot(bot_env(database_url, closed, tmp_path / "data"), log_path)
    try:
        for _ in range(600):  # until the polling task has waited at least twice
            await asyncio.sleep(0.1)
            if log_path.read_text().count("Telegram unreachable") >= 2:
                break
        log = log_path.read_text()
        assert log.count("Telegram unreachable") >= 2, log
        assert "ready (polling mode)" in log
        assert process.poll() is None  # still running
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(process.wait, 60)
        except subprocess.TimeoutExpired:
            process.kill()  # no bot left behind by a failed stop
            raise
    log = log_path.read_text()
    assert code == 0, log
    assert "Traceback" not in log
    assert "restarting" not in log.lower(), log  # an outage, not a crashed task
