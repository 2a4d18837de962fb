"""Masking of sensitive data before an error record, a log line or a Sentry event is written.

What is masked (design: Policies / Sensitive data), in this order:

- **Literal secrets** handed in by the caller (the configured bot token, the webhook secret,
  the Sentry DSN): replaced wherever they appear.
- **Credentials in URLs**: the whole user-info part, with or without a user name
  (``postgresql://user:password@host``, ``redis://:password@host``, a Sentry DSN
  ``https://<key>@host``; a password holding an ``@`` too).
- **Telegram bot tokens** (``<bot id>:<35 characters>``,
  https://core.telegram.org/bots/api#authorizing-your-bot), also inside ``/bot<token>/``.
- **Tokens and keys by shape**: ``Bearer``/``Basic``/``Token`` values, JWTs, well-known key
  prefixes (GitHub ``ghp_``, Slack ``xox?-``, Stripe ``sk_live_``, OpenAI ``sk-``, Google
  ``AIza``, GitLab ``glpat-``, AWS ``AKIA``), and any 32+ character run of letters and digits
  mixing both.
- **Secrets by key name**, in any quoting: ``password=x``, ``password: x``,
  ``password='x'`` (Python keyword arguments), ``{'password': 'x'}`` (Python reprs),
  ``"password": "x"`` (JSON, also escaped as ``\\"password\\": \\"x\\"``), ``password 'x'``,
  ``--password x``; the key may carry a prefix (``DB_PASSWORD``, ``X-Api-Key``,
  ``csrftoken``). Key names: password, passwd, passphrase, pwd, pass, secret, token,
  api/access/secret/private/signing key, auth, authorization, credentials, dsn, cookie,
  session id, csrf, pin, cvv/cvc, otp; Russian пароль, токен, секрет, ключ; Uzbek parol,
  maxfiy so'z, kalit. A quoted value is masked whole (spaces included), an unquoted one up
  to the next space or delimiter.
- **IBANs** (ISO 13616: country, check digits, up to 30 letters and digits, with or without
  spaces) that pass the mod-97 check; the country and the last four characters are kept.
- **E-mail addresses**: the local part (the domain is kept).
- **Passport numbers**: the Uzbek and international form ``AA1234567`` (two capital letters
  and seven digits, written together), and after a word saying it is a passport
  (``passport``, ``паспорт``, ``pasport``, ``серия``) also ``AA 1234567`` and the Russian
  ``4510 123456`` / ``45 10 123456``.
- **PINFL** (JShShIR, the Uzbek 14-digit personal number: sex and century digit 3-6, birth
  date DDMMYY, region, serial, check digit): 14 digits whose day and month are a date, or any
  14 digits after ``PINFL``/``ПИНФЛ``/``JSHSHIR``/``ЖШШИР``.
- **Payment card numbers**: 13-19 digits starting with a network's digit (2 Mir/Mastercard,
  3 Amex/JCB, 4 Visa, 5 Mastercard/Maestro, 6 Discover/UnionPay, 8 Uzcard 8600, 9 Humo 9860),
  a first group of four then groups of three to six, separated by nothing, spaces, dashes or
  dots in any mix, that pass the Luhn check (ISO/IEC 7812). The last four digits are kept
  (as PCI DSS allows).
- **Phone numbers**, by their written *shape*, keeping the last two digits:

  - international: ``+`` (also URL-encoded ``%2B``, or ``00``) then 8 to 15 digits in any
    grouping (E.164 allows at most 15) with spaces, no-break spaces, dots, dashes, brackets
    or ``%20``: ``+998 90 123 45 67``, ``+7 (912) 345-67-89``, ``+7.916.123.45.67``,
    ``%2B998901234567``, ``00998901234567``;
  - national trunk prefix 8 (or 7) with separators: ``8 912 345 67 89``,
    ``8 (912) 345-67-89``, ``8-912-345-67-89``, ``8.912.345.67.89``;
  - local groupings with spaces or dashes: ``90-123-45-67``, ``90 123 45 67``
    (Uzbekistan), ``912 345 67 89``, ``998 90 123 45 67``, ``(202) 555-0143``,
    ``202-555-0143``, ``202.555.0143``;
  - contiguous national numbers whose prefix is a mobile range: ``89123456789`` /
    ``79123456789`` (Russia, 11 digits) and ``998901234567`` (Uzbekistan, 12 digits);
  - any digits after a word saying it is a phone (``phone:``, ``tel``, ``mobile``,
    ``whatsapp``, ``телефон``, ``тел``, ``telefon``...).

Trade-off (false positives against misses): a bare run of digits is *not* sensitive unless
one of the rules above says so. Update ids (9 digits), Telegram user ids (up to 10 digits
today), supergroup ids (``-100`` + 10 digits), order numbers, dates (``2024-05-01``,
``01.05.2024``), times and timestamps (10, 13 or 14 digits such as ``20240501123045``), IP
addresses (dots never separate a local number), versions, SQLSTATEs and amounts
(``+1 250 000.00``: three digits, a decimal point, then cents, is an amount, not a phone) are
left intact. The price: an unformatted number with no ``+``, no known mobile prefix and no
"phone" word next to it (``4155550143``) is missed; a 16-digit id that happens to pass Luhn is
masked as a card; a code written as two capital letters and seven digits is masked as a
passport. The corpus in ``tests/masking_corpus.py`` holds both sides.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

MASK = "***"

# --- secrets ------------------------------------------------------------------------------
# scheme://<user-info>@ : everything up to the last "@" of the authority (a raw "@" in a
# password), with or without a user name
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^/\s?#\"'<>`]*)@")
# <bot id>:<secret>; also matches inside ".../bot123456789:AA.../sendMessage"
_BOT_TOKEN = re.compile(r"(?=\d)(?<!\d)\d{6,12}:[A-Za-z0-9_-]{30,}")
_BEARER = re.compile(r"(?i)\b(bearer|basic|token)(\s+)[A-Za-z0-9._~+/=-]{8,}")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
_KNOWN_KEY = re.compile(
    r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|sk_(?:live|test)_[A-Za-z0-9]{10,}|sk-[A-Za-z0-9_-]{20,}|AIza[0-9A-Za-z_-]{30,}"
    r"|glpat-[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16})\b"
)
# Key names. The first group may follow a prefix that ends the key with it (DB_PASSWORD,
# X-Api-Key, csrftoken); it must end the key name (token_count is not a secret). The second
# group is the whole key or nothing (bypass, spin and pint are not).
# (compound names first: the longest key name at a position wins)
_PREFIXABLE_KEYS = (
    r"api[_\-]?key|apikey|access[_\-]?key|secret[_\-]?key|private[_\-]?key|signing[_\-]?key"
    r"|session[_\-]?id|sessionid|password|passwd|passphrase|pwd|secret|token|authorization"
    r"|auth|credentials?|dsn|cookie|csrf"
)
_WHOLE_KEYS = r"pass|pin|pin[_\-]?code|cvv2?|cvc2?|otp"
_LOCAL_KEYS = (
    r"парол[ьяеию]\w*|токен\w*|секрет\w*|ключ\w*|parol\w*|maxfiy\s+so['ʻ’`]?z\w*"
    r"|kalit\w*"
)
# Found first (one scan), then the separator and the value are matched right after it: the
# key's prefix needs no matching of its own, since any prefix is allowed.
_SECRET_KEYWORD = re.compile(
    rf"(?i:{_PREFIXABLE_KEYS})(?![A-Za-z])|(?<![\w.\-])(?i:{_WHOLE_KEYS})(?!\w)"
    rf"|(?i:{_LOCAL_KEYS})"
)
_SECRET_VALUE = re.compile(
    r"(?P<sep>\\?[\"']?\s*(?:[:=]|=>|->|[—–])\s*|\s+(?=\\?[\"']))"
    r"(?:(?P<q>\\?[\"'])(?P<quoted>.{0,300}?)(?P=q)"
    r"|(?P<plain>(?i:(?:bearer|basic|token)\s+)?[^\s\"'`,;&)}\]<>|]+))"
)
_CLI_SECRET = re.compile(
    r"(?i)(?<![\w\-])(--[\w\-]*?(?:password|passwd|secret|token|api[_\-]?key))"
    r"(\s+)(\"[^\"]*\"|'[^']*'|[^\s\"'-][^\s\"']*)"
)
# 32+ letters and digits mixing both (API keys, hex secrets); UUIDs and snake_case names
# with many separators are not secrets
_LONG_SECRET = re.compile(r"(?=[\w-])(?<![\w-])[A-Za-z0-9_-]{32,}")

# --- IBAN, e-mail, passport, PINFL --------------------------------------------------------
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])")
_EMAIL = re.compile(
    r"(?<![\w.+\-])(?=[\w])[\w.+\-]{1,64}@((?:[A-Za-z0-9\-]+\.)+[A-Za-z]{2,24})(?![\w\-])"
)
_PASSPORT = re.compile(r"(?<![\w\-])[A-Z]{2}\d{7}(?!\w)")
_PASSPORT_WORD = re.compile(
    r"(?i)(?<!\w)(passport|паспорт\w*|pasport\w*|серия)"
    r"(\W{0,20}?(?:(?:no|number|номер|№|raqami)\.?\W{0,5})?)"
    r"([A-Z]{2} ?\d{7}|\d{2} ?\d{2} ?(?:(?:номер|№|no\.?|n)\s*)?\d{6})(?!\w)"
)
_PINFL = re.compile(r"(?<![\d\-])[3-6](?:0[1-9]|[12]\d|3[01])(?:0[1-9]|1[0-2])\d{9}(?!\d)")
_PINFL_WORD = re.compile(r"(?i)(?<!\w)(pinfl|пинфл|jshshir|жшшир)(\W{0,20}?)(\d{14})(?!\d)")

# --- card numbers -------------------------------------------------------------------------
_CARD_SEP = r"[ .\-\u00a0]"
_CARD = re.compile(
    rf"(?<![\w.,:/+\-])[2345689]\d{{3}}(?:{_CARD_SEP}?\d{{3,6}}){{1,4}}(?![\w]|[.,]\d|-\d)"
)

# --- phone numbers ------------------------------------------------------------------------
_SEP = r"(?:[ .\-\u00a0]|%20)"  # separator inside a number
_S = r"[ \-\u00a0]"  # separator of a local number (never a dot: IP addresses)
_AREA = r"(?:\(\d{2,4}\)|\d{2,4})"
# "+" (or %2B or 00) country code, then more groups (8..15 digits in all; excess is left)
_INTERNATIONAL = (
    rf"(?:(?<![\w+%])\+|(?<![\w%])%2[Bb]|(?<![\w+])00(?=[1-9]))\d{{1,4}}"
    rf"(?:{_SEP}?(?:\(\d{{1,5}}\)|\d{{1,5}})){{1,6}}"
)
_NATIONAL = (
    # trunk prefix 8 (or 7) + area + 3-2-2: 8 912 345 67 89, 8 (912) 345-67-89
    rf"[78]{_S}?{_AREA}{_S}?\d{{3}}{_S}\d{{2}}{_S}\d{{2}}",
    # the same written with dots: 8.912.345.67.89 (five groups, never an IP address)
    r"[78]\.\d{3}\.\d{3}\.\d{2}\.\d{2}",
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
_NOT_BEFORE = r"(?<![\w+:/.,\-%])"
# not followed by more digits, a time, a path or decimals
_NOT_AFTER = r"(?![\w:/]|[.,\-]\d)"
_PHONE = re.compile(
    f"(?=[+(\\d%])(?:{_INTERNATIONAL}|{_NOT_BEFORE}(?:{'|'.join(_NATIONAL)})){_NOT_AFTER}"
)
_PHONE_WORD = re.compile(
    r"(?i)\b(phone|tel|mobile|mob|cell|whatsapp|viber|телефон|тел|моб|telefon)"
    r"(\.?\s*(?:number|no\.?|номер|raqami)?\s*[:=#]?\s*)"
    r"((?:\+|%2B)?\d(?:[\d().\-\u00a0 ]|%20){5,22}\d)(?!\d)"
)
# a "+" number ending in three digits, a decimal point and cents is an amount
_AMOUNT_TAIL = re.compile(r"\d{3}[.,]\d{1,2}$")
_DIGIT_GROUP = re.compile(r"\D*\d+")
_HAS_LETTER = re.compile(r"[A-Za-z]")
_HAS_DIGIT = re.compile(r"\d")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)

# words that must be in the (lower-cased) text for the keyword rules to have anything to do
# (also where a key name can start: every alternative of _SECRET_KEYWORD begins with one)
_SECRET_WORDS = (
    "pass", "pwd", "secret", "token", "api", "access", "private", "signing", "auth", "dsn",
    "session", "cookie", "csrf", "credential", "pin", "cvv", "cvc", "otp", "парол", "токен",
    "секрет", "ключ", "parol", "maxfiy", "kalit",
)  # fmt: skip
_BEARER_WORDS = ("bearer", "basic", "token")
_PHONE_WORDS = ("phone", "tel", "mob", "cell", "whatsapp", "viber", "телефон", "тел", "моб")
_PASSPORT_WORDS = ("passport", "паспорт", "pasport", "серия")
_PINFL_WORDS = ("pinfl", "пинфл", "jshshir", "жшшир")


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


def _iban_ok(compact: str) -> bool:
    """ISO 13616 / ISO 7064 mod-97-10: the country code and check digits moved to the end,
    letters as 10..35, the number modulo 97 is 1. Length 15..34."""
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _mask_card(match: re.Match[str]) -> str:
    digits = _digits(match.group(0))
    if 13 <= len(digits) <= 19 and _luhn_ok(digits):
        return f"{MASK}{digits[-4:]}"
    return match.group(0)


def _mask_iban(match: re.Match[str]) -> str:
    """The longest run of the match's space-separated pieces that is a valid IBAN; the
    rest (a following word in capitals) is left as it was."""
    text = match.group(0)
    pieces = text.split(" ")
    for count in range(len(pieces), 0, -1):
        compact = "".join(pieces[:count])
        if _iban_ok(compact):
            rest = text[len(" ".join(pieces[:count])) :]
            return f"{compact[:2]}{MASK}{compact[-4:]}{rest}"
    return text


def _mask_phone(match: re.Match[str]) -> str:
    text = match.group(0)
    international = text.startswith(("+", "%2B", "%2b", "00"))
    if international:
        if _AMOUNT_TAIL.search(text):
            return text
        body = (text[3:] if text.startswith("%2") else text).replace("%20", " ")
        # take digit groups while the number stays within E.164's 15 digits; what follows
        # (a year, a count) is not part of the phone and stays
        taken, count = 0, 0
        for group in _DIGIT_GROUP.finditer(body):
            size = len(_digits(group.group(0)))
            if count + size > 15:
                break
            taken, count = group.end(), count + size
        if count < 8:
            return text
        return f"{MASK}{_digits(body[:taken])[-2:]}{body[taken:]}"
    digits = _digits(text)
    if not 9 <= len(digits) <= 15:
        return text
    return f"{MASK}{digits[-2:]}"


def _mask_phone_word(match: re.Match[str]) -> str:
    digits = _digits(match.group(3).replace("%20", " ").replace("%2B", "+"))
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


def _mask_url_userinfo(match: re.Match[str]) -> str:
    userinfo = match.group(2)
    if not userinfo:
        return match.group(0)
    return f"{match.group(1)}{MASK}{':' + MASK if ':' in userinfo else ''}@"


def _secret_keys(text: str, lowered: str) -> Iterator[re.Match[str]]:
    """``_SECRET_KEYWORD`` matches in ``text``, in order, tried only where a key name can
    start (``str.find`` of ``_SECRET_WORDS`` in ``lowered``: one pass per word in C, much
    faster than the regex scanning every position of a long stack trace)."""
    if len(lowered) != len(text):  # a character whose lower case is longer: scan it all
        yield from _SECRET_KEYWORD.finditer(text)
        return
    starts: set[int] = set()
    for word in _SECRET_WORDS:
        at = lowered.find(word)
        while at != -1:
            starts.add(at)
            at = lowered.find(word, at + 1)
    end = 0
    for start in sorted(starts):
        if start < end:
            continue
        key = _SECRET_KEYWORD.match(text, start)
        if key is not None:
            end = key.end()
            yield key


def _mask_secret_pairs(text: str, lowered: str) -> str:
    """Every value after a secret's key name (``_SECRET_KEYWORD``) and a separator
    (``_SECRET_VALUE``) replaced by ``***``; quotes kept."""
    parts: list[str] = []
    done = 0
    for key in _secret_keys(text, lowered):
        if key.start() < done:
            continue
        value = _SECRET_VALUE.match(text, key.end())
        if value is None:
            continue
        if value.group("q") is not None:
            start, end = value.start("quoted"), value.end("quoted")
        else:
            start, end = value.start("plain"), value.end("plain")
        parts += [text[done:start], MASK]
        done = end
    if not parts:
        return text
    parts.append(text[done:])
    return "".join(parts)


def mask_sensitive(text: str | None, *, extra_secrets: Iterable[str] = ()) -> str:
    """Return ``text`` with sensitive data replaced by ``***`` (see the module docstring).

    Args:
        text: any text; ``None`` becomes an empty string.
        extra_secrets: literal values (the configured bot token, a webhook secret) masked
            wherever they appear, before the pattern rules run.

    A NUL character becomes the four characters ``\\x00`` (PostgreSQL cannot store it).
    Cards keep their last four digits (``***1111``), phones their last two (``***67``),
    IBANs their country and last four characters (``DE***3000``), e-mail addresses their
    domain (``***@example.com``).
    """
    if not text:
        return ""
    if "\x00" in text:  # PostgreSQL text and jsonb cannot hold NUL: written as \x00
        text = text.replace("\x00", "\\x00")
    for secret in extra_secrets:
        if secret:
            text = text.replace(secret, MASK)
    lowered = text.lower()
    has_digit = _HAS_DIGIT.search(text) is not None
    # each rule runs only when the text can contain what it looks for (substring tests are
    # much cheaper than a regex scan over a long stack trace)
    if "://" in text and "@" in text:
        text = _URL_USERINFO.sub(_mask_url_userinfo, text)
    if ":" in text and has_digit:
        text = _BOT_TOKEN.sub(MASK, text)
    if "eyJ" in text:
        text = _JWT.sub(MASK, text)
    text = _KNOWN_KEY.sub(MASK, text)
    if any(word in lowered for word in _BEARER_WORDS):
        text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    if any(word in lowered for word in _SECRET_WORDS):
        text = _mask_secret_pairs(text, text.lower())
        if "--" in text:
            text = _CLI_SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    if "@" in text:
        text = _EMAIL.sub(lambda m: f"{MASK}@{m.group(1)}", text)
    if has_digit:
        text = _IBAN.sub(_mask_iban, text)
        if any(word in lowered for word in _PASSPORT_WORDS):
            text = _PASSPORT_WORD.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
        text = _PASSPORT.sub(MASK, text)
        if any(word in lowered for word in _PINFL_WORDS):
            text = _PINFL_WORD.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
        text = _PINFL.sub(MASK, text)
        text = _CARD.sub(_mask_card, text)
        text = _PHONE.sub(_mask_phone, text)
        if any(word in lowered for word in _PHONE_WORDS):
            text = _PHONE_WORD.sub(_mask_phone_word, text)
    text = _LONG_SECRET.sub(_mask_long_secret, text)
    return text
