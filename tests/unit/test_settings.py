"""Settings parsing and the one-line refusal when BOT_TOKEN is missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from bot.settings import MissingSettingError, Settings

ROOT = Path(__file__).resolve().parents[2]


def test_admin_ids_accept_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_IDS", "1, 22,333")
    assert Settings(_env_file=None).admin_ids == [1, 22, 333]


def test_stuck_thresholds_parse_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUCK_THRESHOLDS", '{"connection:review": 3600}')
    assert Settings(_env_file=None).stuck_thresholds == {"connection:review": 3600.0}


def test_retry_cap_below_base_is_rejected() -> None:
    with pytest.raises(ValidationError, match="RETRY_MAX_DELAY_S"):
        Settings(_env_file=None, retry_base_delay_s=60, retry_max_delay_s=10)


def test_missing_token_raises_a_setting_error() -> None:
    with pytest.raises(MissingSettingError, match="BOT_TOKEN"):
        Settings(_env_file=None, bot_token=None).require_bot_token()


def test_missing_token_stops_the_bot_with_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=tmp_path,  # no .env there
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "BOT_TOKEN" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists(), "no database may be started without a token"


@pytest.mark.parametrize("token", ["not-a-token", "abc:def", "98765", "123:has space", ":secret"])
def test_malformed_token_stops_the_bot_with_one_line(tmp_path: Path, token: str) -> None:
    """A token that cannot be one is refused before anything starts: one line that does not
    repeat the value, exit code 2 (as for a missing token)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT), "BOT_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "BOT_TOKEN is malformed" in lines[0]
    assert token not in lines[0]
    assert not (tmp_path / "data").exists(), "no database may be started without a token"
