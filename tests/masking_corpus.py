"""A corpus for masking, written as an outside tester would: sensitive values in the shapes
people and libraries actually write them (log lines, exception messages, Python reprs, JSON,
URLs, asyncpg's DETAIL lines, Russian and Uzbek text), and look-alikes that must come out
unchanged (dates, amounts, ids, timestamps, versions, addresses, order numbers).

``SENSITIVE``: (text, the secret values in it). A value leaks when it survives verbatim;
a number of nine or more digits also when more than its last four digits survive in a row;
another value also when a six-character piece of it with a letter survives (``leaks``).
``LOOKALIKES``: texts that masking must not change at all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BOT_TOKEN = "7123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0"


@dataclass(frozen=True)
class Sensitive:
    """A text and the secret values in it; ``kind`` groups the corpus in reports."""

    kind: str
    text: str
    secrets: tuple[str, ...]


def _s(kind: str, text: str, *secrets: str) -> Sensitive:
    return Sensitive(kind, text, secrets or (text,))


def digits(text: str) -> str:
    """The digits of ``text``, in order."""
    return re.sub(r"\D", "", text)


def leaks(masked: str, secret: str) -> bool:
    """True when ``secret`` survives in ``masked``: verbatim; or, for a number (nine or
    more digits, most of its characters), more than its last four digits in a row; or, for
    any other value, a six-character piece of it holding a letter."""
    if secret in masked:
        return True
    numeric = digits(secret)
    core = re.sub(r"%20|%2B|[\s.()+\-]", "", secret)
    if len(numeric) >= 9 and len(numeric) * 10 >= len(core) * 7:
        # within one written number (digits and the separators of phones and cards), not
        # across the unrelated numbers of a long text
        numbers = re.findall(r"\d(?:[\d .()\u00a0-]|%20)*", masked)
        return any(numeric[:-4] in digits(number) for number in numbers)
    pieces = {secret[i : i + 6] for i in range(max(len(secret) - 5, 0))}
    return any(piece in masked for piece in pieces if re.search(r"[^\W\d]", piece))


PHONES = [
    _s("phone", "Client phone +998 90 123 45 67, call after 18:00", "+998 90 123 45 67"),
    _s("phone", "Звонить: +7 (916) 123-45-67 после обеда", "+7 (916) 123-45-67"),
    _s("phone", "contact +7.916.123.45.67 (dots)", "+7.916.123.45.67"),
    _s("phone", "GET /callback?phone=%2B998901234567&lang=uz", "%2B998901234567"),
    _s("phone", "form data: phone=%2B7%20916%20123%2045%2067", "%2B7%20916%20123%2045%2067"),
    _s("phone", "tel:+998901234567", "+998901234567"),
    _s("phone", "US office +1-202-555-0143 ext 12", "+1-202-555-0143"),
    _s("phone", "London +44 20 7946 0958", "+44 20 7946 0958"),
    _s("phone", "позвоните 8 (916) 123-45-67 до 17 часов", "8 (916) 123-45-67"),
    _s("phone", "backup 8-916-123-45-67 for request #10234", "8-916-123-45-67"),
    _s("phone", "номер 8.916.123.45.67 не отвечает", "8.916.123.45.67"),
    _s("phone", "номер 89161234567 не отвечает", "89161234567"),
    _s("phone", "sms to 79161234567 failed", "79161234567"),
    _s("phone", "uz mobile 998901234567 written without plus", "998901234567"),
    _s("phone", "Mijoz: (90) 123-45-67, Chilonzor", "(90) 123-45-67"),
    _s("phone", "tel 90 123 45 67 on site", "90 123 45 67"),
    _s("phone", "raqam +998-90-123-45-67 band", "+998-90-123-45-67"),
    _s("phone", "call +998(90)1234567 now", "+998(90)1234567"),
    _s("phone", "Berlin +49 (0)30 1234567", "+49 (0)30 1234567"),
    _s("phone", "international 00998901234567 dialled", "00998901234567"),
    _s(
        "phone",
        "ru +7\u00a0916\u00a0123\u00a045\u00a067 nbsp",
        "+7\u00a0916\u00a0123\u00a045\u00a067",
    ),
    _s("phone", "Telefon raqami: 93 456 78 90", "93 456 78 90"),
    _s("phone", "телефон: 89031234567", "89031234567"),
    _s("phone", '{"phone": "+998 91 234 56 78", "name": "A"}', "+998 91 234 56 78"),
    _s("phone", "DETAIL:  Key (phone)=(+998971234567) already exists.", "+998971234567"),
    _s("phone", "Paris +33 6 12 34 56 78", "+33 6 12 34 56 78"),
    _s("phone", "Beeline +998 (33) 123-45-67", "+998 (33) 123-45-67"),
    _s("phone", "whatsapp +971 50 123 4567", "+971 50 123 4567"),
    _s("phone", "mobile: 0501234567", "0501234567"),
    _s("phone", "{'phone': '+7 916 1234567'}", "+7 916 1234567"),
    _s("phone", "description: broken router, 998 90 123 45 67, flat 5", "998 90 123 45 67"),
    _s("phone", "NA (202) 555-0143 or 202.555.0199", "(202) 555-0143", "202.555.0199"),
]

CARDS = [
    _s("card", "paid with 4111 1111 1111 1111 at 12:30", "4111 1111 1111 1111"),
    _s("card", "card=4111-1111-1111-1111;amount=150000", "4111-1111-1111-1111"),
    _s("card", "card 4111.1111.1111.1111 (dots)", "4111.1111.1111.1111"),
    _s("card", "pan 4111111111111111", "4111111111111111"),
    _s("card", "mixed 4111 1111-1111.1111 separators", "4111 1111-1111.1111"),
    _s("card", "MC 5555 5555 5555 4444 declined", "5555 5555 5555 4444"),
    _s("card", "{'card_number': '5105105105105100'}", "5105105105105100"),
    _s("card", "amex 3782 822463 10005 refunded", "3782 822463 10005"),
    _s("card", "amex compact 378282246310005", "378282246310005"),
    _s("card", "Discover 6011 0009 9013 9424", "6011 0009 9013 9424"),
    _s("card", "JCB 3530111333300000", "3530111333300000"),
    _s("card", "Uzcard 8600 1234 5678 9012 blocked", "8600 1234 5678 9012"),
    _s("card", "Humo 9860-0123-4567-8903", "9860-0123-4567-8903"),
    _s("card", "Mir 2200 7012 3456 7896 issued", "2200 7012 3456 7896"),
    _s("card", "MC 2-series 2221000000000009", "2221000000000009"),
    _s("card", '"pan": "4000 0012 3456 7899"', "4000 0012 3456 7899"),
    _s("card", "karta raqami 8627 0198 7654 3212", "8627 0198 7654 3212"),
    _s("card", "карта 5162 1234 5678 9018, срок 12/27", "5162 1234 5678 9018"),
    _s("card", "UnionPay 6271801234567899", "6271801234567899"),
    _s("card", "Visa 4790\u00a01234\u00a05678\u00a09011", "4790\u00a01234\u00a05678\u00a09011"),
]

IBANS = [
    _s("iban", "transfer to DE89 3704 0044 0532 0130 00 failed", "370400440532013000"),
    _s("iban", "iban=DE89370400440532013000", "370400440532013000"),
    _s("iban", "GB82 WEST 1234 5698 7654 32 REJECTED by bank", "WEST12345698765432"),
    _s("iban", "FR14 2004 1010 0505 0001 3M02 606", "20041010050500013M02606"),
    _s("iban", "NL91ABNA0417164300", "ABNA0417164300"),
    _s("iban", "{'iban': 'CH9300762011623852957'}", "00762011623852957"),
    _s("iban", "KZ86125KZT5004100100 (Kazakhstan)", "125KZT5004100100"),
    _s("iban", "счёт AZ21NABZ00000000137010001944", "NABZ00000000137010001944"),
    _s("iban", "UA21 3223 1300 0002 6007 2335 6600 1", "3223130000026007233566001"),
    _s("iban", "PL61 1090 1014 0000 0712 1981 2874", "109010140000071219812874"),
]

EMAILS = [
    _s("email", "send to ivan.petrov@gmail.com failed", "ivan.petrov"),
    _s("email", "user+tag@mail.ru bounced", "user+tag"),
    _s("email", "Alisher_Karimov@yandex.uz", "Alisher_Karimov"),
    _s("email", "From: Anna Smith <anna.smith@example.org>", "anna.smith"),
    _s("email", "mailto:john.doe@example.com", "john.doe"),
    _s("email", '{"email": "dilnoza.r@company.co.uk"}', "dilnoza.r"),
    _s("email", "IVAN.SIDOROV@MAIL.RU", "IVAN.SIDOROV"),
    _s("email", "{'e-mail': 'k.nurmatov@inbox.uz', 'id': 5}", "k.nurmatov"),
]

PASSPORTS = [
    _s("passport", "passport AA3917265 expired", "AA3917265"),
    _s("passport", "паспорт AB 7654321 выдан", "AB 7654321"),
    _s("passport", "pasport: AC5820394", "AC5820394"),
    _s("passport", "Passport No. 4510 123456", "4510 123456"),
    _s("passport", "паспорт серия 45 10 номер 907315", "номер 907315"),
    _s("passport", "document AD7048391 scanned", "AD7048391"),
    _s("passport", "{'passport': 'FA6603918'}", "FA6603918"),
    _s("passport", "паспорт: 4510123456", "4510123456"),
]

PINFLS = [
    _s("pinfl", "ПИНФЛ 30512871234567", "30512871234567"),
    _s("pinfl", "JSHSHIR: 42506951230016", "42506951230016"),
    _s("pinfl", "pinfl=51903025410023", "51903025410023"),
    _s("pinfl", "client 31507901020034 registered", "31507901020034"),
    _s("pinfl", "{'pinfl': '61204005670012'}", "61204005670012"),
    _s("pinfl", "PINFL 12345678901234 (any 14 digits after the word)", "12345678901234"),
]

SECRETS = [
    _s("secret", "kwargs {'password': 'Qz7!pass'}", "Qz7!pass"),
    _s("secret", "login(password='Lk9_pw')", "Lk9_pw"),
    _s("secret", 'connect(password="Hx8#secret")', "Hx8#secret"),
    _s("secret", "password=Zz9plain; user=admin", "Zz9plain"),
    _s("secret", "PASSWORD: Mn4$word", "Mn4$word"),
    _s("secret", '{"password": "Jk3%json"}', "Jk3%json"),
    _s("secret", 'body=\'{\\"password\\": \\"Esc4ped!\\"}\'', "Esc4ped!"),
    _s("secret", "ValueError: invalid password 'Wq2@ui' for user", "Wq2@ui"),
    _s("secret", "password='two words here'", "two words here"),
    _s("secret", "пароль=Тайна123", "Тайна123"),
    _s("secret", "пароль: qwerty123", "qwerty123"),
    _s("secret", "Пароль: 'Хх9!пар'", "Хх9!пар"),
    _s("secret", "неверный пароля=Zx81ab", "Zx81ab"),
    _s("secret", "parol: Maxfiy123", "Maxfiy123"),
    _s("secret", "parol=Sir_2024x", "Sir_2024x"),
    _s("secret", "paroli: 'Ab12cd!'", "Ab12cd!"),
    _s("secret", "maxfiy so'z: kalit777", "kalit777"),
    _s("secret", "токен: abcd1234efgh", "abcd1234efgh"),
    _s("secret", "token=tk_live_98765abc", "tk_live_98765abc"),
    _s("secret", "api_key='AKd93kf93kd'", "AKd93kf93kd"),
    _s("secret", "X-API-KEY: 9f8e7d6c5b4a", "9f8e7d6c5b4a"),
    _s("secret", "secret: 's3cr3t-V4lue'", "s3cr3t-V4lue"),
    _s("secret", "client_secret=cs_9d8f7g6h", "cs_9d8f7g6h"),
    _s("secret", "access_token=ya29.a0AfH6SMBx", "ya29.a0AfH6SMBx"),
    _s("secret", "refresh_token: 'rt-88a9b7c6'", "rt-88a9b7c6"),
    _s("secret", "Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
    _s("secret", "headers={'Authorization': 'Bearer abc123def456ghi'}", "abc123def456ghi"),
    _s("secret", "redis://:redisPw42@127.0.0.1:6379/0", "redisPw42"),
    _s("secret", "postgresql://bot:pg_Pass99@db:5432/bot refused", "pg_Pass99"),
    _s("secret", "postgres://app:p@ss@word@db/app", "p@ss@word"),
    _s("secret", "amqp://guest:guestPw1@rabbit/", "guestPw1"),
    _s("secret", "https://user:hunter2x@example.com/path", "hunter2x"),
    _s("secret", "DB_PASSWORD=DbPw_777", "DbPw_777"),
    _s("secret", "POSTGRES_PASSWORD: 'pgAdmin!9'", "pgAdmin!9"),
    _s("secret", "kwargs={'user': 'ivan', 'pwd': 'Pw_555x'}", "Pw_555x"),
    _s("secret", "run --password Pass4cli --verbose", "Pass4cli"),
    _s("secret", "X-Telegram-Bot-Api-Secret-Token: wh_Zq81_hook", "wh_Zq81_hook"),
    _s("secret", f"POST https://api.telegram.org/bot{BOT_TOKEN}/sendMessage", BOT_TOKEN),
    _s("secret", f"BOT_TOKEN={BOT_TOKEN}", BOT_TOKEN),
    _s("secret", "Cookie: sessionid=sess9a8b7c6d", "sess9a8b7c6d"),
    _s("secret", "csrftoken=Csrf77token", "Csrf77token"),
    _s("secret", "{'pin': '4921', 'cvv': '713'}", "'4921'", "'713'"),
    _s("secret", "cvv=713 entered", "=713"),
    _s("secret", "API-ключ: kluch-42-xyz", "kluch-42-xyz"),
    _s("secret", "secret_key => 'sk-inline-77'", "sk-inline-77"),
    _s("secret", "openai sk-proj-AbCdEf1234567890XyZ key", "sk-proj-AbCdEf1234567890XyZ"),
    _s("secret", "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib3QifQ.c2lnbmF0dXJlLXZhbHVl",
       "c2lnbmF0dXJlLXZhbHVl"),
    _s("secret", "git token ghp_16C7e42F292c6912E7710c838347Ae178B4a expired",
       "ghp_16C7e42F292c6912E7710c838347Ae178B4a"),
    _s("secret", "dsn=https://0f1e2d3c4b5a69788796a5b4c3d2e1f0@o1.ingest.sentry.io/42",
       "0f1e2d3c4b5a69788796a5b4c3d2e1f0"),
    _s("secret", "otp: 839201", "839201"),
]  # fmt: skip

SENSITIVE: list[Sensitive] = PHONES + CARDS + IBANS + EMAILS + PASSPORTS + PINFLS + SECRETS

# Texts that look numeric or secret-ish but hold nothing sensitive: they must come out
# exactly as they went in.
LOOKALIKES: list[str] = [
    "2024-05-01",
    "01.05.2024",
    "15/08/2023 and 2023/08/15",
    "2024-05-01T12:30:45Z",
    "2024-05-01 12:30:45.123456+05:00",
    "at 12:30:45",
    "1 250 000 UZS",
    "1,250,000.50 so'm",
    "12 345,67 ₽",
    "$1,234.56 and -500.00",
    "balance change +1 250 000.00 UZS",
    "balance +12000.50 today",
    "growth +3.5%",
    "Total: 1 234 567 890 so'm",
    "Стоимость: 150 000 сум",
    "request #10234 moved to review",
    "user_id=5012345678",
    "chat_id=-1001234567890",
    "update 100000001 handled",
    "message_id=4242",
    "error reference E-7K3M9Q",
    "transaction 550e8400-e29b-41d4-a716-446655440000 rolled back",
    "aiogram 3.31.0 on Python 3.11.9 and PostgreSQL 16.4",
    "release v2.1.0-rc.1",
    "connect to 192.168.100.200 and 10.0.0.1:5432",
    "IPv6 2001:db8::1",
    "order ORD-2024-000123",
    "invoice INV/2024/05/0001",
    "SKU CAB-RJ45-100",
    "epoch 1714564800 and 1714564800123 ms",
    "stamp 20240501123045",
    "SQLSTATE 40001 and 23505",
    "max_tokens=1500, token_count=42",
    "password_min_length: 8",
    "retry after 7 s, HTTP 429",
    "ISBN 978-5-17-118366-3",
    "location 41.311081, 69.240562",
    "page 2 of 10",
    "port 8080, PID 12345",
    "Chilonzor 12, kv. 45",
    "telegram @ivan_petrov",
    "@router.callback_query(F.data)",
    'File "handlers/staff.py", line 61, in advance',
    "not a card: 4111 1111 1111 1112",
    "not an IBAN: DE00 1234 5678 9012 3456 78",
    "заявка №12345 от 01.05.2024",
    "ariza raqami 12345",
    "the token is invalid; password is required",
    "author: Pushkin, bypass=1, spin=3",
    "secret_santa=yes",
    "Version 1.2.3.4",
    "tokenizer: bert-base",
    "stock of material 17: requested 5, available 2",
]
