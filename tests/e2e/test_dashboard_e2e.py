"""The real bot process against the Bot API fake: an admin opens every dashboard screen and
takes every action; the health alert arrives with mute buttons and the admin mutes it from
the alert itself; the chart is a photo when Telegram accepts it and text when it refuses;
forged and out-of-range callbacks get clear answers; a stranger is refused everywhere."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import asyncpg

from database.pool import create_pool
from handlers.callbacks import (
    AlertMuteCb,
    DiscrepancyCb,
    DiscrepancyListCb,
    ErrorGroupCb,
    ErrorsCb,
    HistoryCb,
    MenuCb,
    NotificationCb,
    RetryListCb,
)
from tests.e2e.conftest import ADMIN_ID, STRANGER_ID, StartBot
from tests.fakes.telegram_api import FakeTelegramAPI

RU_ADMIN_ID = 555_000_002
REFERENCE = "E-7K3M9Q"


def _text(api: FakeTelegramAPI, chat_id: int) -> str:
    message = api.last_message(chat_id)
    return (message.get("text") or message.get("caption") or "") if message else ""


def _buttons(
    api: FakeTelegramAPI, chat_id: int, message: dict[str, Any] | None = None
) -> list[str]:
    message = message or api.last_message(chat_id) or {}
    rows = message.get("reply_markup", {}).get("inline_keyboard", [])
    return [button["text"] for row in rows for button in row]


class Admin:
    """Presses buttons and remembers every callback query, to check all were answered."""

    def __init__(self, api: FakeTelegramAPI, chat_id: int) -> None:
        self.api, self.chat_id, self.queries = api, chat_id, []  # type: list[str]

    async def press(self, text: str, message_id: int | None = None) -> Any:
        """Press a button and wait until its callback query is answered (the bot handles
        updates concurrently, so the next press waits for this one)."""
        update = self.api.press_button(self.chat_id, text, message_id=message_id)
        query_id = update["callback_query"]["id"]
        self.queries.append(query_id)
        return await self.answer_of(query_id)

    def forge(self, data: str) -> str:
        update = self.api.push_callback(self.chat_id, data, strict=False)
        query_id = update["callback_query"]["id"]
        self.queries.append(query_id)
        return query_id

    async def answer_of(self, query_id: str) -> Any:
        return await self.api.wait_for(
            lambda: next((a for a in self.api.callback_answers if a.query_id == query_id), None)
        )

    async def see(self, fragment: str, wait_s: float = 10.0) -> str:
        await self.api.wait_for(lambda: fragment in _text(self.api, self.chat_id), wait_s)
        return _text(self.api, self.chat_id)

    async def all_answered(self) -> None:
        await self.api.wait_for(
            lambda: {a.query_id for a in self.api.callback_answers} >= set(self.queries)
        )


async def _seed(db: asyncpg.Pool) -> None:
    """A critical system: 60 stuck requests, 3 dead notifications, a critical error group
    seen 7 times in the last hour, an older data error."""
    await db.execute(
        "INSERT INTO users (telegram_id, full_name, role, language) "
        "VALUES ($1, 'Rustam', 'admin', 'ru')",
        RU_ADMIN_ID,
    )
    client = await db.fetchval(
        "INSERT INTO users (telegram_id, full_name) VALUES (777000099, 'Client') RETURNING id"
    )
    await db.execute(
        "INSERT INTO service_requests (workflow_type, client_id, current_state, owner_role, "
        "state_entered_at) SELECT 'connection', $1, 'new', 'manager', now() - interval '30 hours' "
        "FROM generate_series(1, 60)",
        client,
    )
    await db.execute(
        "INSERT INTO pending_notifications (idempotency_key, chat_id, template_key, status, "
        "last_error) SELECT 'dead-' || g, 42, 'admin.text', 'dead', 'TelegramServerError: 502' "
        "FROM generate_series(1, 3) g"
    )
    await db.execute(  # the groups and their hours in the rollup, as the error pipeline writes
        "WITH e AS (INSERT INTO error_records (reference, fingerprint, category, severity, "
        "error_type, message, location, occurrence_count, first_seen_at, last_seen_at) VALUES "
        "($1, 'fp-critical', 'system', 'critical', 'asyncpg.UndefinedTableError', "
        "'relation <str> does not exist', 'requests.py:get:10', 7, now() - interval '20 minutes',"
        " now() - interval '10 minutes'), "
        "('E-DATA22', 'fp-data', 'data', 'medium', 'InputValidationError', 'invalid phone', "
        "'client.py:new:3', 2, now() - interval '3 days', now() - interval '3 days') "
        "RETURNING *) INSERT INTO error_hourly_counts "
        "(hour, record_id, category, severity, occurrences) "
        "SELECT date_trunc('hour', last_seen_at, 'UTC'), id, category, severity, "
        "occurrence_count FROM e",
        REFERENCE,
    )


async def test_admin_walks_every_dashboard_screen_and_action(
    fake_api: FakeTelegramAPI, start_bot: StartBot, database_url: str
) -> None:
    db = await create_pool(database_url, min_size=1, max_size=2)
    try:
        await _seed(db)
        fake_api.add_user(ADMIN_ID, "Admin")
        fake_api.add_user(RU_ADMIN_ID, "Rustam", language_code="ru")
        fake_api.add_user(STRANGER_ID, "Stranger")
        await start_bot(JOB_HEALTH_INTERVAL_S="1", JOB_ALERT_DIGEST_INTERVAL_S="1")
        admin = Admin(fake_api, ADMIN_ID)

        # --- the health alert: once, to both admins, in their languages, with mute buttons
        alert = await fake_api.wait_for(
            lambda: next(
                (m for m in fake_api.messages_to(ADMIN_ID) if "System health changed" in m["text"]),
                None,
            ),
            30,
        )
        assert "healthy → critical" in alert["text"]
        assert _buttons(fake_api, ADMIN_ID, alert) == ["Mute for 1 hour", "Mute for 24 hours"]
        ru_alert = await fake_api.wait_for(lambda: fake_api.last_message(RU_ADMIN_ID), 10)
        assert "Состояние системы изменилось" in ru_alert["text"]
        assert _buttons(fake_api, RU_ADMIN_ID, ru_alert) == [
            "Отключить на 1 час",
            "Отключить на 24 часа",
        ]

        await admin.press("Mute for 1 hour", message_id=alert["message_id"])
        await fake_api.wait_for(
            lambda: _buttons(fake_api, ADMIN_ID, fake_api.messages_to(ADMIN_ID)[0]) == ["Unmute"]
        )
        mute = await db.fetchrow("SELECT * FROM admin_alert_mutes WHERE chat_id = $1", ADMIN_ID)
        assert mute["kind"] == "health"
        answer = fake_api.callback_answers[-1]
        assert "muted for you until" in (answer.text or "") and answer.show_alert
        audit = await db.fetchrow("SELECT * FROM admin_audit_log WHERE action = 'alert.mute'")
        assert (audit["admin_telegram_id"], audit["target_id"]) == (ADMIN_ID, "health")
        assert audit["after_value"]["seconds"] == 3600
        # the snapshot job keeps running every second: still critical, no second alert
        snapshots = await db.fetchval("SELECT count(*) FROM system_health_snapshots")
        await _wait_for_snapshots(db, snapshots + 2)
        health_alerts = [m for m in fake_api.messages_to(ADMIN_ID) if "System health" in m["text"]]
        assert len(health_alerts) == 1
        assert await db.fetchval("SELECT count(*) FROM admin_alerts WHERE kind = 'health'") == 1

        # --- the menu and the health screen
        fake_api.push_message(ADMIN_ID, "/workflow_recovery")
        await admin.see("Choose a section")
        await admin.press("System health")
        text = await admin.see("System health: critical")
        assert "Stuck workflows: <b>" not in text  # HTML parsed by Telegram, not shown
        assert "Stuck workflows: 60" in text
        assert "Dead notifications: 3" in text
        assert "Previous snapshot:" in text
        edits = len(fake_api.calls("editMessageText"))
        answer = await admin.press("Refresh")  # visible feedback: when, or since when
        assert re.fullmatch(r"(Updated at|No change since) \d\d:\d\d:\d\d UTC\.", answer.text)
        await fake_api.wait_for(
            lambda: (
                all(c.response for c in fake_api.calls("editMessageText")[edits:])
                and len(fake_api.calls("editMessageText")) > edits
            )
        )
        await admin.press("« Back")
        await admin.see("Choose a section")

        # --- error statistics, top groups, detail
        await admin.press("Error statistics")
        text = await admin.see("Error statistics")
        assert "Last 24 hours: 7 occurrences in 1 group" in text
        assert "Last 7 days: 9 occurrences in 2 groups" in text
        assert "system / critical: 7" in text
        await admin.press("Top error groups")
        await admin.see("Unresolved error groups: 2")
        top = next(b for b in _buttons(fake_api, ADMIN_ID) if b.startswith(REFERENCE))
        await admin.press(top)
        text = await admin.see(f"Error {REFERENCE}")
        assert "Occurrences: 7" in text and "asyncpg.UndefinedTableError" in text
        # resolve it: audited; the list then leaves it out
        await admin.press("Mark resolved")
        text = await admin.see("Resolved. If this error happens again")
        assert "Mark resolved" not in _buttons(fake_api, ADMIN_ID)
        group = await db.fetchrow("SELECT * FROM error_records WHERE reference = $1", REFERENCE)
        assert group["status"] == "resolved" and group["resolved_at"] is not None
        resolve = await db.fetchrow("SELECT * FROM admin_audit_log WHERE action = 'error.resolve'")
        assert (resolve["target_id"], resolve["before_value"]["status"]) == (REFERENCE, "open")
        assert resolve["after_value"] == {"status": "resolved"}
        await admin.press("« Back")
        await admin.see("Unresolved error groups: 1.")
        await admin.press("« Back")
        await admin.see("Error statistics")

        # --- look up a reference the user quoted
        await admin.press("Look up a reference")
        await admin.see("Send the error reference")
        fake_api.push_message(ADMIN_ID, "E-NOPE00")
        await admin.see("No error has the reference E-NOPE00")
        fake_api.push_message(ADMIN_ID, REFERENCE.lower())
        text = await admin.see(f"Error {REFERENCE}")
        assert "Category: system, severity: critical" in text

        # --- the chart: a photo, then text when Telegram refuses the photo
        fake_api.push_message(ADMIN_ID, "/workflow_recovery")
        await admin.see("Choose a section")
        await admin.press("Error statistics")
        await admin.see("Error statistics")
        menu_id = fake_api.last_message(ADMIN_ID)["message_id"]  # type: ignore[index]
        await admin.press("Chart: 24 hours")
        photo = await fake_api.wait_for(
            lambda: fake_api.last_message(ADMIN_ID).get("photo"),  # type: ignore[union-attr]
            30,
        )
        assert photo[-1]["width"] == 1000 and photo[-1]["height"] == 500
        assert "Errors per hour over the last 24 hours (UTC): 7" in _text(fake_api, ADMIN_ID)
        fake_api.fail_next(
            "sendPhoto", error_code=400, description="Bad Request: IMAGE_PROCESS_FAILED"
        )
        await admin.press("Chart: 7 days", message_id=menu_id)
        text = await admin.see("Errors per day over the last 7 days (UTC): 9", 30)
        assert "system 7" in text and "data 2" in text
        assert [c.ok for c in fake_api.calls("sendPhoto")] == [True, False]

        # --- recovery history shows the mute, with who
        fake_api.push_message(ADMIN_ID, "/workflow_recovery")
        await admin.see("Choose a section")
        await admin.press("Recovery history")
        text = await admin.see("Recovery history. Actions: 2.")
        assert "alerts muted: health changes — Admin" in text
        assert f"error group resolved: error {REFERENCE} — Admin" in text

        # --- forged and out-of-range callbacks: clear answers, never an exception
        for data, expected in [
            (ErrorGroupCb(record_id=987_654).pack(), "does not exist"),
            (ErrorGroupCb(record_id=2**62).pack(), "does not exist"),
            (ErrorsCb(view="chart", hours=5).pack(), "not available"),
            (AlertMuteCb(kind="weather", seconds=3600).pack(), "not available"),
            (AlertMuteCb(kind="error", seconds=7).pack(), "not available"),
        ]:
            answer = await admin.answer_of(admin.forge(data))
            assert expected in (answer.text or ""), data
        admin.forge(HistoryCb(page=10**6).pack())
        await admin.see("Page 1 of 1")
        admin.forge(ErrorsCb(view="top", page=-3).pack())
        await admin.see("Page 1 of 1")
        assert (
            await db.fetchval("SELECT count(*) FROM error_records WHERE context ? 'update_id'") == 0
        )
        await admin.all_answered()

        # --- the Russian-speaking admin sees the screens in Russian
        ru = Admin(fake_api, RU_ADMIN_ID)
        fake_api.push_message(RU_ADMIN_ID, "/workflow_recovery")
        await fake_api.wait_for(lambda: len(_buttons(fake_api, RU_ADMIN_ID)) >= 6)
        ru.forge(MenuCb(section="health").pack())
        await ru.see("Состояние системы")
        ru.forge(MenuCb(section="errors").pack())
        await ru.see("За 24 часа: 7 случаев в 1 группе")  # plural forms of Russian
        await ru.all_answered()

        # --- a stranger is refused on every dashboard callback and the lookup state
        stranger = Admin(fake_api, STRANGER_ID)
        fake_api.push_message(STRANGER_ID, "/start")
        await fake_api.wait_for(lambda: fake_api.last_message(STRANGER_ID))
        for data in [
            MenuCb(section="health").pack(),
            ErrorsCb(view="stats").pack(),
            ErrorsCb(view="chart", hours=24).pack(),
            ErrorGroupCb(record_id=1).pack(),
            AlertMuteCb(kind="error", seconds=3600).pack(),
            HistoryCb(page=0).pack(),
        ]:
            answer = await stranger.answer_of(stranger.forge(data))
            assert "administrators only" in (answer.text or ""), data
        assert (
            await db.fetchval(
                "SELECT count(*) FROM admin_alert_mutes WHERE chat_id = $1", STRANGER_ID
            )
            == 0
        )
        assert len(fake_api.calls("sendPhoto")) == 2
    finally:
        await db.close()


async def _wait_for_snapshots(db: asyncpg.Pool, count: int, wait_s: float = 30.0) -> None:
    """Until the scheduler has stored ``count`` health snapshots in all."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while await db.fetchval("SELECT count(*) FROM system_health_snapshots") < count:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"fewer than {count} health snapshots after {wait_s} s")
        await asyncio.sleep(0.1)


async def _seed_inventory(db: asyncpg.Pool, materials: int) -> dict[str, int]:
    """``materials`` agreeing materials plus three wrong ones: DRIFT (balance 10, ledger 7),
    NEG (ledger -3) and LATE (balance 5, ledger 4); returns their ids."""
    await db.execute(
        "INSERT INTO materials (sku, name, balance) "
        "SELECT 'M' || g, 'material ' || g, 10 FROM generate_series(1, $1::int) g",
        materials,
    )
    await db.execute(
        "INSERT INTO inventory_transactions (material_id, kind, quantity, idempotency_key) "
        "SELECT id, 'receipt', 10, 'opening:' || id FROM materials"
    )
    ids = {}
    for sku, balance, ledger in (("DRIFT", 10, 7), ("NEG", -3, -3), ("LATE", 5, 4)):
        ids[sku] = await db.fetchval(
            "INSERT INTO materials (sku, name, balance) VALUES ($1, $1, $2) RETURNING id",
            sku,
            balance,
        )
        await db.execute(
            "INSERT INTO inventory_transactions (material_id, kind, quantity, idempotency_key) "
            "VALUES ($1, CASE WHEN $2 > 0 THEN 'receipt' ELSE 'issue' END, $2, $3)",
            ids[sku],
            ledger,
            f"open:{sku}",
        )
    return ids


async def test_admin_reconciles_the_inventory_from_the_menu(
    fake_api: FakeTelegramAPI, start_bot: StartBot, database_url: str
) -> None:
    db = await create_pool(database_url, min_size=1, max_size=2)
    try:
        ids = await _seed_inventory(db, 5000)
        fake_api.add_user(ADMIN_ID, "Admin")
        await start_bot(SCHEDULER_ENABLED="false")
        admin = Admin(fake_api, ADMIN_ID)
        fake_api.push_message(ADMIN_ID, "/workflow_recovery")
        await admin.see("Choose a section")
        await admin.press("Inventory reconciliation")
        await admin.see("Open discrepancies: 0")

        # --- run a check: progress by editing the message, then the result
        await admin.press("Run a check now")
        text = await admin.see("Check done.", 60)
        assert "Materials checked: 5003." in text
        assert "Discrepancies found: 3" in text
        progress = [
            c.params.get("text", "")
            for c in fake_api.calls("editMessageText")
            if "Checking materials" in c.params.get("text", "")
        ]
        assert progress[0] == "Checking materials: 0 of 5003…"
        check = await db.fetchrow("SELECT * FROM admin_audit_log WHERE action = 'inventory.check'")
        assert check["success"] and check["after_value"]["materials"] == 5003

        # --- list and fix one, with confirmation
        await admin.press("Open discrepancies (3)")
        await admin.see("Open discrepancies: 3. Page 1 of 1.")
        drift = await db.fetchval(
            "SELECT id FROM inventory_discrepancies WHERE material_id = $1", ids["DRIFT"]
        )
        await admin.press(
            next(b for b in _buttons(fake_api, ADMIN_ID) if b.startswith(f"#{drift} DRIFT"))
        )
        text = await admin.see(f"Discrepancy #{drift}")
        assert "Balance: 10, ledger: 7, correction: -3" in text
        await admin.press("Fix")
        await admin.see("A correction of -3 is written")
        await admin.press("Confirm")
        text = await admin.see(f"Discrepancy #{drift}: adjusted.")
        assert "Balance 10 → 7" in text
        assert await db.fetchval("SELECT balance FROM materials WHERE id = $1", ids["DRIFT"]) == 7
        fixed = await db.fetchrow(
            "SELECT * FROM admin_audit_log WHERE action = 'inventory.fix_one'"
        )
        assert (fixed["target_id"], fixed["after_value"]["action"]) == (str(drift), "adjusted")
        # the same confirmation pressed again is refused: stale, nothing applied twice
        stale = DiscrepancyCb(action="fix_ok", discrepancy_id=drift, page=0).pack()
        answer = await admin.answer_of(admin.forge(stale))
        assert "meanwhile" in (answer.text or "")
        assert (
            await db.fetchval(
                "SELECT count(*) FROM inventory_reconciliation_log WHERE discrepancy_id = $1 "
                "AND action = 'adjusted'",
                drift,
            )
            == 1
        )

        # --- accept one with a reason (second step; empty and too long refused)
        await admin.press("« Back")
        await admin.see("Open discrepancies: 2.")
        neg = await db.fetchval(
            "SELECT id FROM inventory_discrepancies WHERE material_id = $1", ids["NEG"]
        )
        await admin.press(next(b for b in _buttons(fake_api, ADMIN_ID) if b.startswith(f"#{neg}")))
        await admin.see(f"Discrepancy #{neg}")
        await admin.press("Accept with a reason")
        await admin.see("Send the reason for accepting")
        fake_api.push_message(ADMIN_ID, "x" * 501)
        await admin.see("The reason is too long")
        fake_api.push_message(ADMIN_ID, "written off in the March stock count")
        await admin.see(f"Discrepancy #{neg} accepted: written off in the March stock count")
        row = await db.fetchrow("SELECT * FROM inventory_discrepancies WHERE id = $1", neg)
        assert (row["status"], row["reason"]) == (
            "accepted",
            "written off in the March stock count",
        )
        accepted = await db.fetchrow(
            "SELECT * FROM admin_audit_log WHERE action = 'inventory.accept'"
        )
        assert accepted["reason"] == "written off in the March stock count"

        # --- fix all, with confirmation: the last one is fixed, the accepted one left alone
        fake_api.push_message(ADMIN_ID, "/workflow_recovery")
        await admin.see("Choose a section")
        await admin.press("Inventory reconciliation")
        await admin.see("Open discrepancies: 1")
        await admin.press("Fix all")
        await admin.see("Fix every discrepancy (1 open now)?")
        await admin.press("Confirm")
        text = await admin.see("Fix all done.", 60)
        assert "Fixed: 1, failed: 0." in text
        assert "accepted ones skipped: 1" in text
        assert await db.fetchval("SELECT balance FROM materials WHERE id = $1", ids["LATE"]) == 4
        assert await db.fetchval("SELECT balance FROM materials WHERE id = $1", ids["NEG"]) == -3
        assert (
            await db.fetchval(
                "SELECT count(*) FROM admin_audit_log "
                "WHERE action = 'inventory.fix_all' AND success"
            )
            == 1
        )

        # --- ids that do not exist, pages out of range: clear answers
        for data in (
            DiscrepancyCb(action="show", discrepancy_id=987_654).pack(),
            DiscrepancyCb(action="fix_ok", discrepancy_id=2**62).pack(),
            DiscrepancyCb(action="accept", discrepancy_id=0).pack(),
        ):
            answer = await admin.answer_of(admin.forge(data))
            assert "does not exist" in (answer.text or ""), data
        admin.forge(DiscrepancyListCb(page=10**6).pack())
        await admin.see("No open discrepancies.")

        # --- the history lists the inventory actions with who
        admin.forge(MenuCb(section="history").pack())
        # the refused ones too: the stale fix and the forged fix of a missing discrepancy
        text = await admin.see("Recovery history. Actions: 6.")
        assert f"✗ discrepancy fix refused: discrepancy {2**62} — Admin [it does not exist]" in text
        # the refused repeat reads as refused, with why (not as a failed "fixed")
        assert (
            f"✗ discrepancy fix refused: discrepancy {drift} — Admin [it changed meanwhile]" in text
        )
        assert await db.fetchval(
            "SELECT reason FROM inventory_reconciliation_log "
            "WHERE action = 'refused' AND discrepancy_id = $1",
            drift,
        ) == ("no longer open: fixed")
        assert f"✓ discrepancy fixed: discrepancy {drift} — Admin" in text
        assert f"✓ discrepancy accepted: discrepancy {neg} — Admin (written off" in text
        assert "✓ inventory check — Admin" in text
        assert "✓ all discrepancies fixed — Admin" in text
        await admin.all_answered()
    finally:
        await db.close()


CLIENT_CHAT = 777_000_123


async def test_admin_retries_and_discards_failed_notifications(
    fake_api: FakeTelegramAPI, start_bot: StartBot, database_url: str
) -> None:
    db = await create_pool(database_url, min_size=1, max_size=2)
    try:
        # three dead letters and one failing notification to a client's chat
        ids = [
            await db.fetchval(
                "INSERT INTO pending_notifications (idempotency_key, chat_id, template_key, "
                "params, status, attempts, last_error, dead_reason, next_attempt_at, updated_at) "
                "VALUES ($1, $2, 'admin.text', $3::jsonb, $4, 5, "
                "'TelegramServerError: Telegram server says - Bad Gateway', $5, "
                "now() + interval '1 day', now() - make_interval(mins => $6)) RETURNING id",
                f"e2e-{n}",
                CLIENT_CHAT,
                {"text": f"hello {n}"},
                "retrying" if n == 4 else "dead",
                None if n == 4 else "max attempts",
                n,
            )
            for n in (1, 2, 3, 4)
        ]
        fake_api.add_user(ADMIN_ID, "Admin")
        fake_api.add_user(CLIENT_CHAT, "Client")
        await start_bot(SCHEDULER_ENABLED="false")
        admin = Admin(fake_api, ADMIN_ID)

        def client_texts() -> list[str]:
            return [m.get("text", "") for m in fake_api.messages_to(CLIENT_CHAT)]

        fake_api.push_message(ADMIN_ID, "/workflow_recovery")
        await admin.see("Choose a section")
        await admin.press("Notification retries")
        text = await admin.see("Notification retries")
        assert "• dead: 3" in text and "• retrying: 1" in text

        # --- the list with the last error, one detail, retry it now
        await admin.press("Dead and failing (4)")
        text = await admin.see("Dead and failing notifications: 4. Page 1 of 1.")
        assert f"#{ids[0]} dead: TelegramServerError" in text
        await admin.press(
            next(b for b in _buttons(fake_api, ADMIN_ID) if b.startswith(f"#{ids[0]}"))
        )
        text = await admin.see(f"Notification #{ids[0]}: dead")
        assert "Last error: TelegramServerError: Telegram server says - Bad Gateway" in text
        assert "Why it stopped: it failed on every attempt" in text
        await admin.press("Retry now")
        await admin.see(f"Retry notification #{ids[0]} now?")
        await admin.press("Confirm")
        await admin.see(f"Notification #{ids[0]} is due again")
        await fake_api.wait_for(lambda: "hello 1" in client_texts(), 20)
        assert await db.fetchval(
            "SELECT status FROM pending_notifications WHERE id = $1", ids[0]
        ) in (
            "sending",
            "sent",
        )
        retried = await db.fetchrow(
            "SELECT * FROM admin_audit_log WHERE action = 'notification.retry'"
        )
        assert (retried["target_id"], retried["after_value"]) == (str(ids[0]), {"done": True})

        # --- discard one, with confirmation
        await admin.press("« Back")
        await admin.see("Dead and failing notifications: 3.")
        await admin.press(
            next(b for b in _buttons(fake_api, ADMIN_ID) if b.startswith(f"#{ids[1]}"))
        )
        await admin.see(f"Notification #{ids[1]}: dead")
        await admin.press("Discard")
        await admin.see(f"Discard notification #{ids[1]}?")
        await admin.press("Confirm")
        await admin.see(f"Notification #{ids[1]} discarded.")
        assert await db.fetchval(
            "SELECT status FROM pending_notifications WHERE id = $1", ids[1]
        ) == ("discarded")

        # --- retry all: the dead one and the failing one go out
        fake_api.push_message(ADMIN_ID, "/workflow_recovery")
        await admin.see("Choose a section")
        await admin.press("Notification retries")
        await admin.see("Notification retries")
        await admin.press("Retry all now")
        await admin.see("Retry all 2 dead and failing notifications now?")
        await admin.press("Confirm")
        await admin.see("2 notifications are due again")
        await fake_api.wait_for(lambda: {"hello 3", "hello 4"} <= set(client_texts()), 20)
        assert "hello 2" not in client_texts()
        assert (
            await db.fetchval(
                "SELECT count(*) FROM admin_audit_log WHERE action = 'notification.retry_all' "
                "AND (after_value ->> 'count')::int = 2"
            )
            == 1
        )

        # --- ids that do not exist and actions no longer possible: clear answers
        answer = await admin.answer_of(
            admin.forge(NotificationCb(action="show", notification_id=987_654).pack())
        )
        assert "does not exist" in (answer.text or "")
        answer = await admin.answer_of(
            admin.forge(NotificationCb(action="retry", notification_id=-5).pack())
        )
        assert "does not exist" in (answer.text or "")
        admin.forge(NotificationCb(action="discard_ok", notification_id=ids[1]).pack())
        await admin.see(f"Notification #{ids[1]} cannot be discarded now")
        admin.forge(RetryListCb(page=999).pack())
        await admin.see("No dead or failing notifications.")
        await admin.all_answered()
        assert (
            await db.fetchval(
                "SELECT count(*) FROM admin_audit_log WHERE action LIKE 'notification.%'"
            )
            == 4
        )
    finally:
        await db.close()
