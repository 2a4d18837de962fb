"""``mask_sensitive`` on a corpus of realistic log and error strings: phones (international
and local formats), the bot token, other tokens and secrets, card numbers, mixed with
normal text. Nothing sensitive may survive; the normal text (ids, dates, words) must."""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass

import pytest

from recovery.masked_output import MaskingFilter, mask_value
from recovery.masking import mask_sensitive

BOT_TOKEN = "7123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0"


@dataclass(frozen=True)
class Case:
    """A string, the sensitive values in it and the normal text that must stay."""

    text: str
    sensitive: tuple[str, ...]
    kept: tuple[str, ...] = ()
    kind: str = "secret"  # phone (last 2 digits kept), card (last 4 kept) or secret


def phone(text: str, value: str, *kept: str) -> Case:
    return Case(text, (value,), kept, "phone")


def card(text: str, value: str, *kept: str) -> Case:
    return Case(text, (value,), kept, "card")


def secret(text: str, value: str, *kept: str) -> Case:
    return Case(text, (value,), kept, "secret")


CORPUS: list[Case] = [
    # --- phones, international --------------------------------------------------------
    phone("Client phone +998 90 123 45 67, call after 18:00", "+998 90 123 45 67",
          "Client phone", "call after 18:00"),
    phone("Звонить: +7 (912) 345-67-89 после обеда", "+7 (912) 345-67-89",
          "Звонить:", "после обеда"),
    phone("US office +1-202-555-0143 ext 12", "+1-202-555-0143", "US office", "ext 12"),
    phone("contact=+998901234567&lang=uz", "+998901234567", "contact=", "&lang=uz"),
    phone("whatsapp: +44 20 7946 0958 (London)", "+44 20 7946 0958", "(London)"),
    phone("invalid input: '+7 912 3456789' for user 5012345678", "+7 912 3456789",
          "invalid input", "for user 5012345678"),
    # --- phones, local ------------------------------------------------------------------
    phone("позвоните 8 912 345 67 89 до 17 часов", "8 912 345 67 89", "позвоните",
          "до 17 часов"),
    phone("Mijoz raqami 90-123-45-67, manzil: Chilonzor 12", "90-123-45-67",
          "Mijoz raqami", "Chilonzor 12"),
    phone("backup number 8 (912) 345-67-89 for request #10234", "8 (912) 345-67-89",
          "request #10234"),
    phone("call (202) 555-0143 today", "(202) 555-0143", "call", "today"),
    phone("tel 90 123 45 67 on site", "90 123 45 67", "on site"),
    phone("description: broken router, 998 90 123 45 67, flat 5", "998 90 123 45 67",
          "broken router", "flat 5"),
    phone("номер 89123456789 не отвечает", "89123456789", "не отвечает"),
    phone("uz mobile 998901234567 written without plus", "998901234567",
          "written without plus"),
    phone("phone: 4155550143 (no format)", "4155550143", "(no format)"),
    phone("телефон: 901234567", "901234567"),
    # --- the bot token and other tokens ----------------------------------------------------
    secret(f"POST https://api.telegram.org/bot{BOT_TOKEN}/sendMessage failed", BOT_TOKEN,
           "https://api.telegram.org/bot", "/sendMessage failed"),
    secret(f"BOT_TOKEN={BOT_TOKEN} in .env", BOT_TOKEN, "in .env"),
    secret("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
           "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
           "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"),
    secret("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib3QifQ.c2lnbmF0dXJlLXZhbHVlLWhlcmU in cookie",
           "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib3QifQ.c2lnbmF0dXJlLXZhbHVlLWhlcmU", "in cookie"),
    secret("connect to postgresql://bot:s3cr3t-Pa55@db.internal:5432/app failed",
           "s3cr3t-Pa55", "db.internal:5432/app failed"),
    secret("sentry dsn https://0f1e2d3c4b5a69788796a5b4c3d2e1f0@o4501.ingest.sentry.io/42",
           "0f1e2d3c4b5a69788796a5b4c3d2e1f0", "o4501.ingest.sentry.io/42"),
    secret("login failed: password=hunter2; user=admin", "hunter2", "login failed",
           "user=admin"),
    secret('{"api_key": "AbC123xyz987", "name": "router"}', "AbC123xyz987", '"name": "router"'),
    secret("DATABASE_PASSWORD=verysecret exported", "verysecret", "exported"),
    secret("webhook_secret: Zq9-webhook-secret-value checked", "Zq9-webhook-secret-value",
           "checked"),
    secret("git token ghp_16C7e42F292c6912E7710c838347Ae178B4a expired",
           "ghp_16C7e42F292c6912E7710c838347Ae178B4a", "expired"),
    secret("slack xoxb-123456789012-abcdefABCDEF posted", "xoxb-123456789012-abcdefABCDEF",
           "posted"),
    secret("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc declined", "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
           "declined"),
    secret("aws AKIAIOSFODNN7EXAMPLE rotated", "AKIAIOSFODNN7EXAMPLE", "rotated"),
    secret("api key 9f8e7d6c5b4a39281706f5e4d3c2b1a0ffeeddcc in header",
           "9f8e7d6c5b4a39281706f5e4d3c2b1a0ffeeddcc", "in header"),
    # --- cards ------------------------------------------------------------------------
    card("paid with 4111 1111 1111 1111 at 12:30", "4111 1111 1111 1111", "paid with",
         "at 12:30"),
    card("card=5500-0000-0000-0004;amount=150000", "5500-0000-0000-0004", "amount=150000"),
    card("Uzcard 8600123456789012 declined", "8600123456789012", "Uzcard", "declined"),
    card("Humo 9860 1234 5678 9015 ok", "9860 1234 5678 9015", "Humo", "ok"),
    card("amex 3782 822463 10005 refunded", "3782 822463 10005", "refunded"),
    card("Mir 2200123456789019 issued", "2200123456789019", "issued"),
]  # fmt: skip

# Text that looks numeric but is not sensitive: it must come out unchanged.
NOT_SENSITIVE = [
    "Update id=123456701 is handled. Duration 5 ms by bot id=123456789",
    "user 5012345678 wrote in chat -1001234567890 (message 1532)",
    "Request #10234 moved to review; version 3 -> 4",
    "job cleanup done in 0.042 s: {'error_records': 12, 'transaction_log': 3}",
    "2024-05-01 12:30:45,123 INFO aiogram.event: polling started",
    "connect to 10.123.45.67:5432 and 192.168.100.200",
    "amount 1 000 000 sum paid in 3 parts, ratio 3.14159265358979",
    "not a card: 4111 1111 1111 1112 (Luhn fails)",
    "callback query 4000000000000000001 answered",
    "transaction 3f2c7a9e-1b2c-4d5e-8f90-123456789abc rolled back",
    'File "/work/app/.venv/lib/python3.11/site-packages/aiogram/dispatcher/dispatcher.py", '
    "line 309, in _process_update",
    "the token is invalid; password is required",
    "Too Many Requests: retry after 35",
    "stock of material 17: requested 5, available 2",
]


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 30
    assert {case.kind for case in CORPUS} == {"phone", "card", "secret"}


@pytest.mark.parametrize("case", CORPUS, ids=[c.text[:40] for c in CORPUS])
def test_nothing_sensitive_survives_and_normal_text_does(case: Case) -> None:
    masked = mask_sensitive(case.text)
    assert "***" in masked
    for value in case.sensitive:
        assert value not in masked
        if case.kind == "phone":
            # only the last two digits may remain
            assert _digits(value)[:-2] not in _digits(masked)
            assert f"***{_digits(value)[-2:]}" in masked
        elif case.kind == "card":
            assert _digits(value)[:-4] not in _digits(masked)
            assert f"***{_digits(value)[-4:]}" in masked
        else:
            # no 8-character piece of the secret is left
            pieces = {value[i : i + 8] for i in range(0, max(1, len(value) - 7))}
            assert not [p for p in pieces if p in masked], masked
    for text in case.kept:
        assert text in masked, masked


@pytest.mark.parametrize("text", NOT_SENSITIVE)
def test_ids_dates_amounts_and_words_are_left_alone(text: str) -> None:
    assert mask_sensitive(text) == text


def test_literal_secrets_are_masked_wherever_they_appear() -> None:
    masked = mask_sensitive("token=abc and again plain-abc-secret-x", extra_secrets=("abc",))
    assert "abc" not in masked


def test_none_and_empty_become_empty() -> None:
    assert mask_sensitive(None) == ""
    assert mask_sensitive("") == ""


def test_nested_values_are_masked_and_others_kept() -> None:
    value = {
        "phone": "+998 90 123 45 67",
        "items": ["card 4111111111111111", 42, None],
        "nested": {"url": "postgresql://u:p4ss@h/db"},
        "update_id": 123456701,
    }
    masked = mask_value(value)
    assert masked["phone"] == "***67"
    assert masked["items"] == ["card ***1111", 42, None]
    assert "p4ss" not in masked["nested"]["url"]
    assert masked["update_id"] == 123456701


def test_logging_filter_masks_the_message_and_the_stack_trace() -> None:
    record_holder: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            record_holder.append(record)

    logger = logging.getLogger("test_masking_filter")
    logger.propagate = False
    handler = Keep()
    handler.addFilter(MaskingFilter(extra_secrets=(BOT_TOKEN,)))
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError(f"send to +998 90 123 45 67 failed with {BOT_TOKEN}")
        except RuntimeError:
            logger.error("update %s for %s failed", 123456701, "+7 (912) 345-67-89",
                         exc_info=sys.exc_info())  # fmt: skip
    finally:
        logger.removeHandler(handler)
    (record,) = record_holder
    text = logging.Formatter().format(record)
    assert "update 123456701 for ***89 failed" in text
    assert "+998 90 123 45 67" not in text
    assert BOT_TOKEN not in text
    assert "RuntimeError" in text
