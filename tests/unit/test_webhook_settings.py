"""Webhook mode settings validate themselves: HTTPS URL and a secret token Telegram accepts."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bot.settings import Settings

URL = "https://bot.example.com/telegram/webhook"


def test_polling_is_the_default() -> None:
    settings = Settings(_env_file=None)
    assert settings.webhook_mode is False


def test_webhook_mode_with_an_https_url_and_a_secret() -> None:
    settings = Settings(_env_file=None, webhook_url=URL, webhook_secret="s3cret_-Token")
    assert settings.webhook_mode is True


def test_webhook_mode_requires_a_secret() -> None:
    with pytest.raises(ValidationError, match="WEBHOOK_SECRET"):
        Settings(_env_file=None, webhook_url=URL)


@pytest.mark.parametrize("secret", ["has space", "semi;colon", "x" * 257])
def test_a_secret_telegram_would_refuse_is_rejected(secret: str) -> None:
    # setWebhook secret_token: 1-256 characters, only A-Z, a-z, 0-9, _ and -
    with pytest.raises(ValidationError, match="WEBHOOK_SECRET"):
        Settings(_env_file=None, webhook_url=URL, webhook_secret=secret)


def test_webhook_url_must_be_https() -> None:
    with pytest.raises(ValidationError, match="https"):
        Settings(_env_file=None, webhook_url="http://bot.example.com/hook", webhook_secret="s")
