"""Walk-throughs through the bot process, as people see them, in English, Russian and
Uzbek: a client opens a request (a photo at the description step is answered with what the
step expects), lists it, and gets hints for an unknown command, free text and a sticker; a
manager moves a request on with a "Next step" button that names the step; a technician
takes materials with buttons (names and balances, no ids to know); an admin opens every
section of the menu. Every text and button is checked: no raw code (``in_work``,
``request.status_changed``, ``status: active``), no English word of the screens in ru/uz
outside the loanwords, and counts with the plural forms of the language for 1, 2, 5, 21
(the retry-all confirmation and the error statistics).
"""

from __future__ import annotations

import re
from typing import Any

import asyncpg
import pytest

from database.pool import create_pool
from tests.e2e.conftest import ADMIN_ID, StartBot
from tests.factories import make_material, make_request, make_user
from tests.fakes.telegram_api import FakeTelegramAPI

LANGS = ("en", "ru", "uz")
# codes that must never reach a person
RAW = re.compile(
    r"\b(in_work|quality_check|junior_manager|business_logic|request\.[a-z_]+|admin\.[a-z_]+"
    r"|status: active|normal:|create:|reset:|reassign:|occurrence\(s\)|group\(s\))"
)
# English words of the screens that a Russian or Uzbek screen must not show
ENGLISH = re.compile(
    r"\b(request|requests|stuck|state|status|new|repair|connection|technician|manager|"
    r"notification|error|health|history|confirm|cancel|back|page|next|step|"
    r"active|dead|retrying|occurrences?|groups?|snapshot|healthy|degraded|critical|none)\b",
    re.I,
)
# what may stay in Latin letters in every language: commands, codes, units of the data
ALLOWED = re.compile(r"/[a-z_]+|E-[A-Z0-9]{6}|UTC|#\d+|[A-Z]{2,}-[A-Z0-9-]+")


def _check(text: str, lang: str, where: str) -> None:
    assert not RAW.search(text), f"{where} ({lang}) shows a raw code: {text!r}"
    if lang != "en":
        words = ENGLISH.findall(ALLOWED.sub("", text))
        assert not words, f"{where} ({lang}) shows English {words}: {text!r}"


class Person:
    """One chat: sends, presses, and checks everything the bot shows."""

    def __init__(self, api: FakeTelegramAPI, user_id: int, lang: str) -> None:
        self.api, self.user_id, self.lang = api, user_id, lang
        self.taps = 0

    def shown(self) -> list[dict[str, Any]]:
        return self.api.messages_to(self.user_id)

    def last(self) -> dict[str, Any]:
        return self.shown()[-1]

    def buttons(self, message: dict[str, Any] | None = None) -> list[str]:
        rows = (message or self.last()).get("reply_markup", {}).get("inline_keyboard", [])
        return [button["text"] for row in rows for button in row]

    def _check_all(self, where: str) -> None:
        for message in self.shown():
            _check(message.get("text", ""), self.lang, where)
            for label in self.buttons(message):
                _check(label, self.lang, f"{where} button")

    async def send(self, text: str, expect: str | re.Pattern[str]) -> str:
        count = len(self.shown())
        self.api.push_message(self.user_id, text, language_code=self.lang)
        return await self._wait(count, expect, text)

    async def media(self, kind: str, expect: str) -> str:
        count = len(self.shown())
        self.api.push_media(self.user_id, kind)
        return await self._wait(count, expect, kind)

    async def press(self, label: str, expect: str | re.Pattern[str]) -> str:
        """Press the button labelled ``label`` (on the newest message that has it); the
        answer is a new message or the edited one."""
        count = len(self.shown())
        message = next(m for m in reversed(self.shown()) if label in self.buttons(m))
        before = message.get("text")
        self.api.press_button(self.user_id, label, message_id=message["message_id"])
        self.taps += 1

        def changed() -> str | None:
            for m in [*self.shown()[count:], self._message(message["message_id"])]:
                text = m.get("text", "")
                if (
                    m is not None
                    and _matches(text, expect)
                    and (m.get("message_id") != message["message_id"] or text != before)
                ):
                    return text
            return None

        text = await self.api.wait_for(changed, 20)
        self._check_all(f"after {label!r}")
        return text

    def _message(self, message_id: int) -> dict[str, Any]:
        return next((m for m in self.shown() if m["message_id"] == message_id), {})

    async def _wait(self, count: int, expect: str | re.Pattern[str], what: str) -> str:
        text = await self.api.wait_for(
            lambda: next(
                (
                    m.get("text", "")
                    for m in self.shown()[count:]
                    if _matches(m.get("text", ""), expect)
                ),
                None,
            ),
            20,
        )
        self._check_all(f"after {what!r}")
        return text


def _matches(text: str, expect: str | re.Pattern[str]) -> bool:
    return bool(expect.search(text)) if isinstance(expect, re.Pattern) else expect in text


T: dict[str, dict[str, str]] = {
    "type_prompt": {"en": "What do you need?", "ru": "Что вам нужно?", "uz": "Sizga nima kerak?"},
    "connection": {"en": "connection", "ru": "подключение", "uz": "ulanish"},
    "describe": {"en": "Describe the problem", "ru": "Опишите проблему", "uz": "Muammo"},
    "step_hint": {
        "en": "I am waiting for the description",
        "ru": "Жду описание",
        "uz": "tavsifini kutyapman",
    },
    "opened": {"en": "is open", "ru": "открыта", "uz": "ochildi"},
    "unknown": {
        "en": "I do not know this command",
        "ru": "не знаю такой команды",
        "uz": "Bunday buyruqni bilmayman",
    },
    "free": {"en": "I answer commands only", "ru": "только на команды", "uz": "faqat buyruqlarga"},
    "media": {"en": "only text messages", "ru": "только текстовые", "uz": "faqat matnli"},
    "next": {
        "en": "Next step: assigned",
        "ru": "Следующий шаг: назначена",
        "uz": "Keyingi bosqich: tayinlangan",
    },
    "which_request": {
        "en": "Materials for which request?",
        "ru": "Материалы для какой заявки?",
        "uz": "Materiallar qaysi ariza uchun?",
    },
    "how_many": {"en": "How many", "ru": "Сколько", "uz": "qancha"},
    "used": {"en": "Used 3", "ru": "взято 3", "uz": "dan 3"},
    "menu": {"en": "Choose a section", "ru": "Выберите раздел", "uz": "Boʻlimni tanlang"},
}

# "Retry all {n} ...?" for 1, 2, 5 and 21 dead notifications: each language's forms
RETRY_ALL = {
    "en": {
        1: "Retry the 1 dead or failing notification now?",
        2: "Retry all 2 dead and failing notifications now?",
        5: "Retry all 5 dead",
        21: "Retry all 21 dead",
    },
    "ru": {
        1: "1 недоставленное или повторяемое уведомление?",
        2: "2 недоставленных и повторяемых уведомления?",
        5: "5 недоставленных и повторяемых уведомлений?",
        21: "21 недоставленное или повторяемое уведомление?",
    },
    "uz": {1: "Barcha 1 ta", 2: "Barcha 2 ta", 5: "Barcha 5 ta", 21: "Barcha 21 ta"},
}
# The error statistics' "{n} occurrences in 1 group" for 1, 2, 5 and 21 (Russian: three forms)
OCCURRENCES = {
    "en": {
        1: "1 occurrence in 1 group",
        2: "2 occurrences in 1 group",
        5: "5 occurrences in 1 group",
        21: "21 occurrences in 1 group",
    },
    "ru": {
        1: "1 случай в 1 группе",
        2: "2 случая в 1 группе",
        5: "5 случаев в 1 группе",
        21: "21 случай в 1 группе",
    },
    "uz": {n: f"1 ta guruhda {n} ta holat" for n in (1, 2, 5, 21)},
}


@pytest.mark.parametrize("lang", LANGS)
async def test_client_staff_and_admin_walk_through(
    fake_api: FakeTelegramAPI, start_bot: StartBot, database_url: str, lang: str
) -> None:
    db = await create_pool(database_url, min_size=1, max_size=2)
    try:
        await _walk(fake_api, start_bot, db, lang)
    finally:
        await db.close()


async def _walk(api: FakeTelegramAPI, start_bot: StartBot, db: asyncpg.Pool, lang: str) -> None:
    client_id, manager_id, tech_id = 620_000_001, 620_000_002, 620_000_003
    manager = await make_user(
        db, role="manager", language=lang, name="Maria Karimova", telegram_id=manager_id
    )
    tech = await make_user(
        db, role="technician", language=lang, name="Aziz Rahimov", telegram_id=tech_id
    )
    cable = await db.fetchrow(
        "INSERT INTO materials (sku, name, unit, balance) "
        "VALUES ('CBL-1', 'UTP cable', 'm', 50) RETURNING *"
    )
    await db.execute(
        "INSERT INTO inventory_transactions (material_id, kind, quantity, idempotency_key) "
        "VALUES ($1, 'receipt', 50, 'walk-receipt')",
        cable["id"],
    )
    await make_material(db, sku="ONT-1", balance=7)
    api.add_user(ADMIN_ID, "Admin", lang)
    api.add_user(client_id, "Nodira", lang)
    api.add_user(manager_id, "Maria Karimova", lang)
    api.add_user(tech_id, "Aziz Rahimov", lang)
    await start_bot()

    # --- client -----------------------------------------------------------------------
    client = Person(api, client_id, lang)
    await client.send("/start", "")
    await client.send("/new", T["type_prompt"][lang])
    assert T["connection"][lang] in client.buttons()
    await client.press(T["connection"][lang], T["describe"][lang])
    await client.media("photo", T["step_hint"][lang])  # a photo where a description is due
    opened = await client.send("No internet since morning, Chilonzor 9", T["opened"][lang])
    request_id = int(re.search(r"#(\d+)", opened).group(1))  # type: ignore[union-attr]
    await client.send("/my", f"#{request_id}")
    await client.send("/nonsense", T["unknown"][lang])
    await client.send("hello?", T["free"][lang])
    await client.media("sticker", T["media"][lang])
    # "Request #N is open" is not followed by "your request #N is now: new"
    assert not await db.fetchval(
        "SELECT count(*) FROM pending_notifications WHERE request_id = $1 AND chat_id = $2",
        request_id,
        client_id,
    )

    # --- manager: "Next step" names the state it moves to -------------------------------
    staff = Person(api, manager_id, lang)
    await staff.send("/tasks", f"#{request_id}")
    label = next(b for b in staff.buttons() if b.startswith(T["next"][lang]))
    await staff.press(label, f"#{request_id}")
    assert (
        await db.fetchval("SELECT current_state FROM service_requests WHERE id = $1", request_id)
    ) == "assigned"

    # --- technician: /use with buttons ---------------------------------------------------
    work = await make_request(
        db, client_id=manager["id"], state="in_work", role="technician", assignee_id=tech["id"]
    )
    technician = Person(api, tech_id, lang)
    await technician.send("/use", T["which_request"][lang])
    await technician.press(
        next(b for b in technician.buttons() if b.startswith(f"#{work['id']} ")), "#"
    )
    cable_button = next(b for b in technician.buttons() if b.startswith("UTP cable · "))
    assert "50" in cable_button
    await technician.press(cable_button, T["how_many"][lang])
    await technician.media("photo", "")  # at the quantity step: what it expects
    used = await technician.send("3", T["used"][lang])
    assert "UTP cable" in used and "47" in used
    assert await db.fetchval("SELECT balance FROM materials WHERE id = $1", cable["id"]) == 47

    # --- admin: every section, and plural forms ------------------------------------------
    admin = Person(api, ADMIN_ID, lang)
    await admin.send("/workflow_recovery", T["menu"][lang])
    sections = admin.buttons()
    assert len(sections) == 6
    for section in sections:
        await admin.press(section, "")
        back = next(b for b in admin.buttons() if b.startswith("«"))
        await admin.press(back, T["menu"][lang])
    for n in (1, 2, 5, 21):
        await db.execute("DELETE FROM pending_notifications")
        await db.execute(
            "INSERT INTO pending_notifications (idempotency_key, recipient_id, chat_id, "
            "template_key, status, attempts, last_error) "
            "SELECT 'dead-' || g, $1, $2, 'request.status_changed', 'dead', 5, 'chat not found' "
            "FROM generate_series(1, $3) g",
            manager["id"],
            manager_id,
            n,
        )
        await admin.press(sections[4], "")  # notification retries
        retry_all = next(
            b
            for b in admin.buttons()
            if f"({n})" not in b and not b.startswith("«") and "(" not in b
        )
        text = await admin.press(retry_all, str(n))
        assert RETRY_ALL[lang][n] in text, text
        cancel = admin.buttons()[-1]
        await admin.press(cancel, "")
        back = next(b for b in admin.buttons() if b.startswith("«"))
        await admin.press(back, T["menu"][lang])
    for n in (1, 2, 5, 21):  # one error group with n occurrences in the last hour
        await db.execute("DELETE FROM error_records")  # its hourly rollup goes with it
        await db.execute(
            "WITH e AS (INSERT INTO error_records (reference, fingerprint, category, severity, "
            "error_type, message, location, occurrence_count, first_seen_at, last_seen_at) "
            "VALUES ('E-WALK' || $1::int, 'fp-walk', 'system', 'high', 'RuntimeError', 'boom', "
            "'walk.py:1', $1, now() - interval '20 minutes', now() - interval '10 minutes') "
            "RETURNING *) INSERT INTO error_hourly_counts "
            "(hour, record_id, category, severity, occurrences) "
            "SELECT date_trunc('hour', last_seen_at, 'UTC'), id, category, severity, "
            "occurrence_count FROM e",
            n,
        )
        await admin.press(sections[3], OCCURRENCES[lang][n])  # error statistics
        back = next(b for b in admin.buttons() if b.startswith("«"))
        await admin.press(back, T["menu"][lang])
    # a dead notification's detail: the recipient's name and what it tells, no next attempt
    await admin.press(sections[4], "")
    await admin.press(next(b for b in admin.buttons() if "(21)" in b), "#")
    first = next(b for b in admin.buttons() if b.startswith("#"))
    detail = await admin.press(first, "Maria Karimova")
    assert str(manager_id) not in detail
    if lang == "en":
        assert "next attempt" not in detail and "their request moved on" in detail
    taps = admin.taps
    assert taps > 0
