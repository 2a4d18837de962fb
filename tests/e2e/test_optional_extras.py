"""A production install without the optional extras (embedded, charts, sentry, redis): the bot
starts, says what is off, and the admin's error chart comes as text; a setting that needs a
missing extra stops the bot with one line saying what to install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import ADMIN_ID, ROOT, StartBot
from tests.fakes.telegram_api import DEFAULT_TOKEN, FakeTelegramAPI

pytestmark = pytest.mark.e2e

WITHOUT_EXTRAS = str(ROOT / "tests" / "fakes" / "without_extras")
"""First on PYTHONPATH: pgserver, matplotlib, sentry_sdk and redis cannot be imported."""


def _pythonpath() -> str:
    return os.pathsep.join(p for p in (WITHOUT_EXTRAS, os.environ.get("PYTHONPATH")) if p)


async def test_without_the_extras_the_bot_starts_and_says_what_is_off(
    start_bot: StartBot, fake_api: FakeTelegramAPI
) -> None:
    bot = await start_bot(PYTHONPATH=_pythonpath())
    log = bot.log()
    assert "charts: off (matplotlib not installed: error statistics as text)" in log
    assert "Sentry: off (SENTRY_DSN unset)" in log
    assert "Redis: off (REDIS_URL unset" in log
    # the error chart without matplotlib: the figures as text, no photo
    fake_api.push_message(ADMIN_ID, "/workflow_recovery")
    await fake_api.wait_for(lambda: "Choose a section" in _last(fake_api), 15)
    fake_api.press_button(ADMIN_ID, "Error statistics")
    await fake_api.wait_for(lambda: "Chart: 24 hours" in str(fake_api.last_message(ADMIN_ID)), 15)
    fake_api.press_button(ADMIN_ID, "Chart: 24 hours")
    await fake_api.wait_for(lambda: "over the last 24 hours" in _last(fake_api), 15)
    assert not fake_api.calls("sendPhoto")
    assert bot.process.poll() is None


def _last(api: FakeTelegramAPI) -> str:
    message = api.last_message(ADMIN_ID) or {}
    return str(message.get("text", ""))


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({}, "DATABASE_URL is not set (the embedded PostgreSQL is the default), but the "
             "'embedded' extra (pgserver) is not installed"),
        ({"DATABASE_URL": "postgresql://bot@127.0.0.1:1/bot", "REDIS_URL": "redis://r:6379"},
         "REDIS_URL is set, but the 'redis' extra (redis) is not installed"),
        ({"DATABASE_URL": "postgresql://bot@127.0.0.1:1/bot",
          "SENTRY_DSN": "https://key@sentry.example.invalid/1"},
         "SENTRY_DSN is set, but the 'sentry' extra (sentry_sdk) is not installed"),
    ],
)  # fmt: skip
def test_a_setting_that_needs_a_missing_extra_stops_with_one_line(
    env: dict[str, str], says: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=tmp_path,  # no .env there
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "PYTHONPATH":
             os.pathsep.join((WITHOUT_EXTRAS, str(ROOT))), "BOT_TOKEN": DEFAULT_TOKEN,
             "DATA_DIR": str(tmp_path / "data"), **env},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0], result.stderr
    assert "pip install -c requirements.lock" in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists()
