"""Masking of sensitive data before an error record or a log line is written.

Covers phone numbers (international ``+998 90 123 45 67`` and local ``8 (901) 234-56-78``
formats), Telegram bot tokens (``123456789:AA...``, 35 characters after the colon), bearer
tokens, ``password=``/``token=``/``secret=``/``api_key=`` pairs, URLs with credentials, and
payment card numbers (13-19 digits passing the Luhn check). Normal text is left intact.
"""

from __future__ import annotations

import logging
import re

MASK = "***"

_BOT_TOKEN = re.compile(r"\b\d{6,12}:[A-Za-z0-9_-]{30,}")
_BEARER = re.compile(r"(?i)\b(bearer|token|basic)\s+[A-Za-z0-9._~+/=-]{16,}")
_SECRET_PAIR = re.compile(
    r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|auth|"
    r"authorization|dsn|webhook_secret|bot_token)(\s*[=:]\s*|\"\s*:\s*\")([^\s\"',;&]+)"
)
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/\s:@]+):([^/\s@]+)@")
_CARD_CANDIDATE = re.compile(r"(?<![\d.])(?:\d[ -]?){12,18}\d(?![\d.])")
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s-]?)?(?:\(\d{2,4}\)|\d{2,4})[\s-]?\d{2,4}[\s-]?\d{2}[\s-]?\d{2}(?!\d)"
)
_LONG_SECRET = re.compile(r"\b(?=[A-Za-z0-9_-]*[A-Za-z])(?=[A-Za-z0-9_-]*\d)[A-Za-z0-9_-]{32,}\b")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _mask_card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    if 13 <= len(digits) <= 19 and _luhn_ok(digits):
        return f"{MASK}{digits[-4:]}"
    return match.group(0)


def _mask_phone(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = re.sub(r"\D", "", text)
    if len(digits) < 9:
        return text
    return f"{MASK}{digits[-2:]}"


def mask_sensitive(text: str | None, *, extra_secrets: tuple[str, ...] = ()) -> str:
    """Return ``text`` with sensitive data replaced by ``***``.

    ``extra_secrets`` are literal values (the configured bot token, a webhook secret) that
    are masked wherever they appear. ``None`` becomes an empty string.
    """
    if not text:
        return ""
    for secret in extra_secrets:
        if secret:
            text = text.replace(secret, MASK)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}{MASK}:{MASK}@", text)
    text = _BOT_TOKEN.sub(MASK, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    text = _SECRET_PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    text = _CARD_CANDIDATE.sub(_mask_card, text)
    text = _PHONE.sub(_mask_phone, text)
    text = _LONG_SECRET.sub(MASK, text)
    return text


class MaskingFilter(logging.Filter):
    """A logging filter that masks sensitive data in every record's final message."""

    def __init__(self, extra_secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.extra_secrets = extra_secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_sensitive(message, extra_secrets=self.extra_secrets)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_sensitive(record.exc_text, extra_secrets=self.extra_secrets)
        if masked != message or record.args:
            record.msg, record.args = masked, None
        return True
