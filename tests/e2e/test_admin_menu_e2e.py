"""The real bot process against the Bot API fake: an admin forces a stuck request on, a
non-admin's command and forged callback are refused and change nothing."""

from __future__ import annotations

import asyncio
import re

from database.pool import create_pool
from handlers.callbacks import ActionCode, StuckActionCb
from tests.e2e.conftest import ADMIN_ID, STRANGER_ID, StartBot, run_cli
from tests.fakes.telegram_api import FakeTelegramAPI


def _text(api: FakeTelegramAPI, chat_id: int) -> str:
    message = api.last_message(chat_id)
    return message["text"] if message else ""


def _buttons(api: FakeTelegramAPI, chat_id: int) -> list[str]:
    message = api.last_message(chat_id) or {}
    rows = message.get("reply_markup", {}).get("inline_keyboard", [])
    return [button["text"] for row in rows for button in row]


async def test_admin_forces_a_stuck_request_and_strangers_are_refused(
    fake_api: FakeTelegramAPI,
    start_bot: StartBot,
    cli_env: dict[str, str],
    database_url: str,
) -> None:
    assert "demo data loaded" in await asyncio.to_thread(run_cli, ["seed-demo"], cli_env)
    await start_bot()
    db = await create_pool(database_url, min_size=1, max_size=2)
    try:
        # the admin opens the menu: five sections and the history
        fake_api.add_user(ADMIN_ID, "Admin")
        fake_api.push_message(ADMIN_ID, "/workflow_recovery")
        await fake_api.wait_for(lambda: "Choose a section" in _text(fake_api, ADMIN_ID))
        assert {
            "Stuck workflows",
            "System health",
            "Inventory reconciliation",
            "Error statistics",
            "Notification retries",
        } <= set(_buttons(fake_api, ADMIN_ID))

        # stuck list: the demo data has requests stuck for more than 24 h
        fake_api.press_button(ADMIN_ID, "Stuck workflows")
        await fake_api.wait_for(lambda: "Stuck workflows:" in _text(fake_api, ADMIN_ID))
        first = next(b for b in _buttons(fake_api, ADMIN_ID) if b.startswith("#"))
        request_id = int(re.match(r"#(\d+)", first).group(1))  # type: ignore[union-attr]
        before = await db.fetchrow("SELECT * FROM service_requests WHERE id = $1", request_id)
        assert before["status"] == "active"

        # detail, then the confirmation screen, then confirm
        fake_api.press_button(ADMIN_ID, first)
        await fake_api.wait_for(lambda: f"Request #{request_id}" in _text(fake_api, ADMIN_ID))
        assert "History:" in _text(fake_api, ADMIN_ID)
        fake_api.press_button(ADMIN_ID, "Force transition")
        await fake_api.wait_for(lambda: "Force request" in _text(fake_api, ADMIN_ID))
        fake_api.press_button(ADMIN_ID, "Confirm")
        await fake_api.wait_for(lambda: "moved from" in _text(fake_api, ADMIN_ID))

        after = await db.fetchrow("SELECT * FROM service_requests WHERE id = $1", request_id)
        assert after["version"] == before["version"] + 1
        assert after["current_state"] != before["current_state"]
        transitions = await db.fetch(
            "SELECT * FROM workflow_transitions WHERE request_id = $1 AND kind = 'force'",
            request_id,
        )
        assert len(transitions) == 1
        assert transitions[0]["from_state"] == before["current_state"]
        assert transitions[0]["to_state"] == after["current_state"]
        log_rows = await db.fetch(
            "SELECT * FROM workflow_recovery_log WHERE request_id = $1", request_id
        )
        assert len(log_rows) == 1
        assert log_rows[0]["success"] is True
        assert log_rows[0]["action"] == "force_transition"
        assert log_rows[0]["admin_telegram_id"] == ADMIN_ID
        assert log_rows[0]["before_state"]["state"] == before["current_state"]
        assert log_rows[0]["after_state"]["state"] == after["current_state"]
        # every callback query the admin made was answered
        await fake_api.wait_for(lambda: len(fake_api.callback_answers) >= 4)

        # a stranger: the command is refused ...
        fake_api.add_user(STRANGER_ID, "Stranger")
        fake_api.push_message(STRANGER_ID, "/workflow_recovery")
        await fake_api.wait_for(lambda: "administrators only" in _text(fake_api, STRANGER_ID))
        assert not _buttons(fake_api, STRANGER_ID)
        # ... and so is a forged callback of the force action on the same request
        forged = StuckActionCb(
            action=ActionCode.FORCE, request_id=request_id, version=after["version"], step=2
        ).pack()
        update = fake_api.push_callback(STRANGER_ID, forged, strict=False)
        query_id = update["callback_query"]["id"]
        answer = await fake_api.wait_for(
            lambda: next((a for a in fake_api.callback_answers if a.query_id == query_id), None)
        )
        assert "administrators only" in (answer.text or "")
        unchanged = await db.fetchrow("SELECT * FROM service_requests WHERE id = $1", request_id)
        assert unchanged["version"] == after["version"]
        assert unchanged["current_state"] == after["current_state"]
        assert (
            await db.fetchval(
                "SELECT count(*) FROM workflow_recovery_log WHERE request_id = $1", request_id
            )
            == 1
        )
    finally:
        await db.close()
