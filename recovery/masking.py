"""Masking of sensitive data before an error record or a log line is written.

What is masked (design: Policies / Sensitive data):

- **Literal secrets** handed in by the caller (the configured bot token, the webhook secret):
  replaced wherever they appear.
- **Credentials in URLs** (``postgresql://user:password@host``, a Sentry DSN
  ``https://<key>@host``): the user-info part.
- **Telegram bot tokens** (``<bot id>:<35 characters>``, https://core.telegram.org/bots/api#authorizing-your-bot),
  also inside ``/bot<token>/`` API URLs.
- **Other tokens and secrets**: ``Bearer``/``Basic`` values, ``password=``, ``token:``,
  ``api_key=``... pairs (also JSON ``"secret": "..."``), JWTs, well-known key prefixes
  (GitHub ``ghp_``, Slack ``xox?-``, Stripe ``sk_live_``, AWS ``AKIA``), and any 32+ character
  run of letters and digits mixing both.
- **Payment card numbers**: 13-19 digits, contiguous or in groups of four (Amex 4-6-5), that
  pass the Luhn check (ISO/IEC 7812). The last four digits are kept (as PCI DSS allows).
- **Phone numbers**, by their written *shape*, keeping the last two digits:

  - international: ``+`` then 8 to 15 digits in any grouping (E.164 allows at most 15):
    ``+998 90 123 45 67``, ``+7 (912) 345-67-89``, ``+1-202-555-0143``, ``+998901234567``;
  - national trunk prefix 8 (Russia, Kazakhstan) with separators: ``8 912 345 67 89``,
    ``8 (912) 345-67-89``, ``8-912-345-67-89``;
  - local groupings with separators: ``90-123-45-67``, ``90 123 45 67`` (Uzbekistan),
    ``912 345 67 89``, ``998 90 123 45 67``, ``(202) 555-0143``, ``202-555-0143``;
  - contiguous national numbers whose prefix is a mobile range: ``89123456789`` /
    ``79123456789`` (Russia, 11 digits) and ``998901234567`` (Uzbekistan, 12 digits);
  - any digits after a word saying it is a phone (``phone:``, ``tel``, ``телефон``,
    ``telefon``, ``raqam``...).

Trade-off (false positives against misses): a bare run of digits is *not* a phone unless one
of the rules above says so. Update ids (9 digits), Telegram user ids (up to 10 digits today),
supergroup ids (``-100`` + 10 digits), order numbers, dates (``2024-05-01``), times, IP
addresses and amounts are left intact; the price is that an unformatted number with no
``+``, no known mobile prefix and no "phone" word next to it (e.g. ``4155550143``) is missed.
A shape rule could also hit an id written with the same grouping (``912 345 67 89``), which
ids never are in this bot's logs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"

# --- secrets ------------------------------------------------------------------------------
# user-info of a URL: scheme://user:password@ or scheme://key@ (Sentry DSN)
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)([^/\s:@]+)(?::([^/\s@]*))?@")
# <bot id>:<secret>; also matches inside ".../bot123456789:AA.../sendMessage"
_BOT_TOKEN = re.compile(r"(?=\d)(?<!\d)\d{6,12}:[A-Za-z0-9_-]{30,}")
_BEARER = re.compile(r"(?i)\b(bearer|basic|token)(\s+)[A-Za-z0-9._~+/=-]{12,}")
_SECRET_PAIR = re.compile(
    r"(?i)(\b|_)(password|passwd|pwd|secret|client_secret|token|access_token|refresh_token|"
    r"api[_-]?key|apikey|access[_-]?key|secret[_-]?key|authorization|dsn|private[_-]?key|"
    r"webhook_secret|bot_token|session[_-]?id|cookie)"
    r"(\"?\s*[=:]\s*\"?)"
    r"([^\s\"',;&]+)"
)
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
_KNOWN_KEY = re.compile(
    r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|sk_(?:live|test)_[A-Za-z0-9]{10,}|AKIA[0-9A-Z]{16})\b"
)
# 32+ letters and digits mixing both (API keys, hex secrets); UUIDs and snake_case names
# with many separators are not secrets
_LONG_SECRET = re.compile(r"(?=[\w-])(?<![\w-])[A-Za-z0-9_-]{32,}")

# --- card numbers -------------------------------------------------------------------------
# 13-19 digits, contiguous or 4-4-4-4(-1..3) / Amex 4-6-5 with one kind of separator; the
# first digit must be a card network's (2 Mir/Mastercard, 3 Amex/JCB, 4 Visa, 5 Mastercard/
# Maestro, 6 Discover/UnionPay/Maestro, 8 Uzcard 8600, 9 Humo 9860) and Luhn must pass.
_CARD = re.compile(
    r"(?=[2345689])"
    r"(?<![\d.,:/-])"
    r"(?:\d{13,19}"
    r"|\d{4}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{1,3})?"
    r"|\d{4}([ -])\d{6}\2\d{5})"
    r"(?![\d.,:/]|-\d)"
)

# --- phone numbers ------------------------------------------------------------------------
_S = r"[ -]"  # separator inside a number
_AREA = r"(?:\(\d{2,4}\)|\d{2,4})"
# "+" country code, then more groups (8..15 digits in all; the excess is left, see below)
_INTERNATIONAL = r"(?<![\w+])\+\d{1,4}(?:[ -]?(?:\(\d{1,5}\)|\d{1,5})){1,6}"
_NATIONAL = (
    # trunk prefix 8 (or 7) + area + 3-2-2: 8 912 345 67 89, 8 (912) 345-67-89
    rf"[78][ -]?{_AREA}[ -]?\d{{3}}{_S}\d{{2}}{_S}\d{{2}}",
    # country code without "+": 998 90 123 45 67
    rf"\d{{3}}{_S}\d{{2}}{_S}\d{{3}}{_S}\d{{2}}{_S}\d{{2}}",
    # local: 90-123-45-67, 912 345 67 89, (912) 345-67-89
    rf"{_AREA}{_S}?\d{{3}}{_S}\d{{2}}{_S}\d{{2}}",
    # North America: (202) 555-0143, 202-555-0143, 202.555.0143
    r"(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4}",
    # contiguous mobile numbers: 89123456789, 79123456789, 998901234567
    r"[78]9\d{9}|998\d{9}",
)
# not glued to a word, another number, a time, a path or a negative id
_NOT_BEFORE = r"(?<![\w+:/.,-])"
# not followed by more digits, a time, a path or decimals
_NOT_AFTER = r"(?![\w:/]|[.,-]\d)"
_PHONE = re.compile(
    f"(?=[+(\\d])(?:{_INTERNATIONAL}|{_NOT_BEFORE}(?:{'|'.join(_NATIONAL)})){_NOT_AFTER}"
)
_PHONE_WORD = re.compile(
    r"(?i)\b(phone|tel|mobile|mob|whatsapp|телефон|тел|telefon|raqam)"
    r"(\.?\s*(?:number|номер|raqami)?\s*[:=#]?\s*)"
    r"(\+?\d[\d()-]{5,18}\d)(?!\d)"
)
_DIGIT_GROUP = re.compile(r"\D*\d+")
_HAS_LETTER = re.compile(r"[A-Za-z]")
_HAS_DIGIT = re.compile(r"\d")
# words that must be in the (lower-cased) text for the keyword rules to have anything to do
_SECRET_WORDS = ("pass", "pwd", "secret", "token", "key", "auth", "dsn", "session", "cookie")
_BEARER_WORDS = ("bearer", "basic", "token")
_PHONE_WORDS = ("phone", "tel", "mob", "whatsapp", "телефон", "тел", "raqam")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)


def _luhn_ok(digits: str) -> bool:
    """The Luhn checksum of ISO/IEC 7812 (payment card numbers)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _mask_card(match: re.Match[str]) -> str:
    digits = _digits(match.group(0))
    if 13 <= len(digits) <= 19 and _luhn_ok(digits):
        return f"{MASK}{digits[-4:]}"
    return match.group(0)


def _mask_phone(match: re.Match[str]) -> str:
    text = match.group(0)
    if text.startswith("+"):
        # take digit groups while the number stays within E.164's 15 digits; what follows
        # (a year, a count) is not part of the phone and stays
        taken, count = 0, 0
        for group in _DIGIT_GROUP.finditer(text):
            size = len(_digits(group.group(0)))
            if count + size > 15:
                break
            taken, count = group.end(), count + size
        if count < 8:
            return text
        return f"{MASK}{_digits(text[:taken])[-2:]}{text[taken:]}"
    digits = _digits(text)
    if not 9 <= len(digits) <= 15:
        return text
    return f"{MASK}{digits[-2:]}"


def _mask_phone_word(match: re.Match[str]) -> str:
    digits = _digits(match.group(3))
    if len(digits) < 7:
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}{MASK}{digits[-2:]}"


def _mask_long_secret(match: re.Match[str]) -> str:
    text = match.group(0)
    if not _HAS_LETTER.search(text) or not _HAS_DIGIT.search(text):
        return text
    if _UUID.fullmatch(text) or text.count("_") + text.count("-") > 4:
        return text
    return MASK


def mask_sensitive(text: str | None, *, extra_secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with sensitive data replaced by ``***`` (see the module docstring).

    Args:
        text: any text; ``None`` becomes an empty string.
        extra_secrets: literal values (the configured bot token, a webhook secret) masked
            wherever they appear, before the pattern rules run.

    Cards keep their last four digits (``***1111``), phones their last two (``***67``).
    """
    if not text:
        return ""
    for secret in extra_secrets:
        if secret:
            text = text.replace(secret, MASK)
    lowered = text.lower()
    # each rule runs only when the text can contain what it looks for (substring tests are
    # much cheaper than a regex scan over a long stack trace)
    if "://" in text and "@" in text:
        text = _URL_CREDENTIALS.sub(_mask_url_credentials, text)
    if ":" in text:
        text = _BOT_TOKEN.sub(MASK, text)
    if "eyJ" in text:
        text = _JWT.sub(MASK, text)
    text = _KNOWN_KEY.sub(MASK, text)
    if any(word in lowered for word in _BEARER_WORDS):
        text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    if any(word in lowered for word in _SECRET_WORDS):
        text = _SECRET_PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}{m.group(3)}{MASK}", text)
    text = _CARD.sub(_mask_card, text)
    text = _PHONE.sub(_mask_phone, text)
    if any(word in lowered for word in _PHONE_WORDS):
        text = _PHONE_WORD.sub(_mask_phone_word, text)
    text = _LONG_SECRET.sub(_mask_long_secret, text)
    return text


def _mask_url_credentials(match: re.Match[str]) -> str:
    if match.group(3) is not None:
        return f"{match.group(1)}{MASK}:{MASK}@"
    return f"{match.group(1)}{MASK}@"


def mask_value(value: Any, *, extra_secrets: Iterable[str] = ()) -> Any:
    """``value`` with every string in it masked (dicts, lists and tuples are walked)."""
    secrets = tuple(extra_secrets)
    if isinstance(value, str):
        return mask_sensitive(value, extra_secrets=secrets)
    if isinstance(value, Mapping):
        return {key: mask_value(item, extra_secrets=secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(item, extra_secrets=secrets) for item in value]
    return value


class MaskingFilter(logging.Filter):
    """A logging filter that masks sensitive data in every record's final message and in its
    formatted exception (stack trace)."""

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
