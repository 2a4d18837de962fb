"""The stuck-workflow section through the real bot process and the Bot API fake.

An admin walks the list (pages, filters), a detail, each of the four actions with its
confirmation and reason step, a stale repeat, a batch and its repeat, the recovery history,
an outdated button; the stuck digest reaches the admin. A non-admin forges the callback of
every action and every step: each is refused and nothing changes. Every callback query is
answered.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import asyncpg

from database.demo_data import DEMO_TELEGRAM_ID_BASE, DEMO_USERS
from database.pool import create_pool
from handlers.callbacks import (
    ActionCode,
    StuckActionCb,
    StuckAssigneesCb,
    StuckBatchCb,
    StuckBatchRunCb,
    StuckDetailCb,
    StuckHistoryCb,
    StuckListCb,
)
from tests.e2e.conftest import ADMIN_ID, STRANGER_ID, StartBot, run_cli
from tests.fakes.telegram_api import FakeTelegramAPI


class Admin:
    """Drives one chat: presses buttons on a tracked menu message, records query ids."""

    def __init__(self, api: FakeTelegramAPI, user_id: int) -> None:
        self.api, self.user_id = api, user_id
        self.message_id: int | None = None
        self.queries: list[str] = []

    def screen(self) -> dict[str, Any]:
        for message in self.api.messages_to(self.user_id):
            if message["message_id"] == self.message_id:
                return message
        return {}

    def text(self) -> str:
        return self.screen().get("text", "")

    def buttons(self) -> list[str]:
        rows = self.screen().get("reply_markup", {}).get("inline_keyboard", [])
        return [button["text"] for row in rows for button in row]

    def data_of(self, label: str) -> str:
        rows = self.screen().get("reply_markup", {}).get("inline_keyboard", [])
        return next(b["callback_data"] for row in rows for b in row if b["text"] == label)

    async def wait(self, needle: str) -> str:
        await self.api.wait_for(lambda: needle in self.text(), 20)
        return self.text()

    async def press(self, label: str, expect: str) -> str:
        update = self.api.press_button(self.user_id, label, message_id=self.message_id)
        self.queries.append(update["callback_query"]["id"])
        return await self.wait(expect)

    async def press_prefix(self, prefix: str, expect: str) -> str:
        label = next(b for b in self.buttons() if b.startswith(prefix))
        return await self.press(label, expect)

    def push(self, data: str) -> str:
        update = self.api.push_callback(
            self.user_id, data, message_id=self.message_id, strict=False
        )
        self.queries.append(update["callback_query"]["id"])
        return update["callback_query"]["id"]

    async def send_and_follow(self, text: str, expect: str) -> str:
        """Send a message; the answer is a new message, which becomes the tracked one."""
        before = {m["message_id"] for m in self.api.messages_to(self.user_id)}
        self.api.push_message(self.user_id, text)

        def answered() -> int | None:
            for message in self.api.messages_to(self.user_id):
                if message["message_id"] not in before and expect in message.get("text", ""):
                    return message["message_id"]
            return None

        self.message_id = await self.api.wait_for(answered, 20)
        return self.text()


async def _request_id(db: asyncpg.Pool, description: str) -> int:
    return await db.fetchval("SELECT id FROM service_requests WHERE description = $1", description)


async def _world(db: asyncpg.Pool) -> dict[str, Any]:
    """Everything a refused action must leave as it was."""
    return {
        "requests": [dict(r) for r in await db.fetch("SELECT * FROM service_requests ORDER BY id")],
        "transitions": await db.fetchval("SELECT count(*) FROM workflow_transitions"),
        "log": await db.fetchval("SELECT count(*) FROM workflow_recovery_log"),
        "ledger": await db.fetchval("SELECT count(*) FROM inventory_transactions"),
        "balances": [tuple(r) for r in await db.fetch("SELECT id, balance FROM materials")],
    }


async def test_admin_repairs_stuck_workflows_and_strangers_cannot(
    fake_api: FakeTelegramAPI,
    start_bot: StartBot,
    cli_env: dict[str, str],
    database_url: str,
) -> None:
    assert "demo data loaded" in await asyncio.to_thread(run_cli, ["seed-demo"], cli_env)
    db = await create_pool(database_url, min_size=1, max_size=2)
    try:
        await _walk(fake_api, start_bot, db)
    finally:
        await db.close()


async def _walk(api: FakeTelegramAPI, start_bot: StartBot, db: asyncpg.Pool) -> None:
    # Tom, who holds a fresh repair request, leaves: it is stuck whatever the time
    slow = await _request_id(db, "Slow speed in the evening")
    await db.execute(
        "UPDATE service_requests SET assignee_id = u.id FROM users u "
        "WHERE u.full_name = 'Tom Technician' AND service_requests.id = $1",
        slow,
    )
    await db.execute("UPDATE users SET is_active = FALSE WHERE full_name = 'Tom Technician'")
    api.add_user(ADMIN_ID, "Admin")
    for offset, name, _role, language in DEMO_USERS:  # their chats exist: deliveries succeed
        api.add_user(DEMO_TELEGRAM_ID_BASE + offset, name, language)
    await start_bot(JOB_STUCK_INTERVAL_S="2")
    admin = Admin(api, ADMIN_ID)

    # the digest job alerts the admin once about the seven stuck requests
    digest = await api.wait_for(
        lambda: next(
            (m for m in api.messages_to(ADMIN_ID) if "Newly stuck requests" in m["text"]), None
        ),
        30,
    )
    assert "Newly stuck requests: 7" in digest["text"]
    assert f"#{slow}" in digest["text"]
    # each request with its type, state and time stuck, in words
    line = rf"^#{slow} repair · in work · \d+(d \d+h|h \d+m|m)$"
    assert re.search(line, digest["text"], re.M), digest["text"]

    # --- the list: pages and filters ----------------------------------------------------
    api.push_message(ADMIN_ID, "/workflow_recovery")
    admin.message_id = (
        await api.wait_for(
            lambda: next(
                (m for m in api.messages_to(ADMIN_ID) if "Choose a section" in m["text"]), None
            )
        )
    )["message_id"]
    text = await admin.press("Stuck workflows", "Stuck workflows: 7. Page 1 of 2.")
    assert "assignee inactive" not in text  # the 5 longest stuck are over their deadline
    assert len([b for b in admin.buttons() if b.startswith("#")]) == 5
    text = await admin.press("›", "Page 2 of 2.")
    assert "Tom Technician · assignee inactive" in text
    await admin.press("‹", "Page 1 of 2.")
    await admin.press("Filter", "Filter stuck workflows by type and state:")
    await admin.press("repair", "Type: repair")
    text = await admin.press("All states", "Stuck workflows: 3.")
    assert "Filter: repair" in text
    await admin.press("Filter", "Type: repair")
    text = await admin.press("materials", "Stuck workflows: 1.")
    assert "Filter: repair / materials" in text
    await admin.press("Filter", "Filter stuck workflows")
    await admin.press("All types", "Stuck workflows: 7.")

    # --- reset, with the materials it gives back, and a reason ----------------------------
    router_job = await _request_id(db, "Install router, Yunusobod 7")
    balances = dict(await db.fetch("SELECT sku, balance FROM materials"))
    taps = len(admin.queries)  # from the stuck list
    text = await admin.press_prefix(f"#{router_job} ", f"Request #{router_job} (connection)")
    assert "History:" in text and "Stuck for 3d 8h" in text
    text = await admin.press("Reset to previous state", "Reset request")
    assert f"Reset request #{router_job} from in work back to new?" in text
    assert "UTP cable cat5e (CBL-UTP5E): 120 m" in text
    assert "GPON ONT terminal (ONT-GPON): 27 pcs" in text
    await admin.press("Confirm with a reason", "Send the reason as a message")
    text = await admin.send_and_follow("technician sent to the wrong address", "Done:")
    assert f"Done: request #{router_job} moved from in work to new." in text
    # with a reason: request, action, "Confirm with a reason", then the reason (a message)
    assert len(admin.queries) - taps == 3
    assert "Returned to stock:" in text
    reset = await db.fetchrow("SELECT * FROM service_requests WHERE id = $1", router_job)
    assert (reset["current_state"], reset["owner_role"]) == ("new", "manager")
    returns = await db.fetch(
        "SELECT * FROM inventory_transactions WHERE kind = 'return' AND request_id = $1",
        router_job,
    )
    assert len(returns) == 5
    after = dict(await db.fetch("SELECT sku, balance FROM materials"))
    assert after["CBL-UTP5E"] == balances["CBL-UTP5E"] + 120
    assert after["ONT-GPON"] == balances["ONT-GPON"] + 27
    log = await db.fetchrow(
        "SELECT * FROM workflow_recovery_log WHERE request_id = $1 ORDER BY id DESC", router_job
    )
    assert (log["action"], log["success"], log["reason"], log["admin_telegram_id"]) == (
        "reset_state",
        True,
        "technician sent to the wrong address",
        ADMIN_ID,
    )

    # --- force, then the same Confirm again: refused, nothing changes ------------------------
    review = await _request_id(db, "Home internet, Baker St 221b")
    await admin.press("Stuck workflows", "Stuck workflows: 6.")
    taps = len(admin.queries)  # from the stuck list
    await admin.press_prefix(f"#{review} ", f"Request #{review}")
    text = await admin.press("Force transition", "Force request")
    assert f"Force request #{review} from review to in work?" in text
    assert "The technician staff and the client will be notified." in text
    skip = admin.data_of("Confirm")
    text = await admin.press("Confirm", "Done:")
    assert f"Done: request #{review} moved from review to in work." in text
    # without a reason: request, action, Confirm (two taps from the request's detail)
    assert len(admin.queries) - taps == 3
    forced = await db.fetchrow("SELECT * FROM service_requests WHERE id = $1", review)
    assert forced["current_state"] == "in_work"
    world = await _world(db)
    admin.push(skip)  # the same button pressed twice
    text = await admin.wait("Refused:")
    assert f"Refused: request #{review} changed since you opened it" in text
    assert (await _world(db))["requests"] == world["requests"]
    assert (await _world(db))["transitions"] == world["transitions"]

    # --- complete, with its side effects spelled out --------------------------------------
    cable = await _request_id(db, "Cable for Sergeli 3")
    await admin.press("Stuck workflows", "Stuck workflows: 5.")
    await admin.press_prefix(f"#{cable} ", f"Request #{cable}")
    text = await admin.press("Force completion", "to completion?")
    assert f"Force request #{cable} from materials to completion?" in text
    assert "Steps skipped: quality check." in text
    assert "No materials were issued for it." in text
    text = await admin.press("Confirm", "Done:")
    assert f"Done: request #{cable} moved from materials to completed." in text
    done = await db.fetchrow("SELECT * FROM service_requests WHERE id = $1", cable)
    assert (done["status"], done["current_state"]) == ("completed", "completed")

    # --- reassign from the paginated list of active technicians, from a filtered list -------
    await admin.press("Stuck workflows", "Stuck workflows: 4.")
    await admin.press("Filter", "Filter stuck workflows by type and state:")
    await admin.press("repair", "Type: repair")
    await admin.press("All states", "Stuck workflows: 3.")
    await admin.press_prefix(f"#{slow} ", f"Request #{slow}")
    assert "Assignee: Tom Technician (assignee inactive)" in admin.text()
    text = await admin.press("Reassign", "choose an active technician (page 1 of 1)")
    assert admin.buttons()[0] == "Aziz Technician · 0 active"
    text = await admin.press("Aziz Technician · 0 active", "to Aziz Technician?")
    assert f"Reassign request #{slow} (in work) to Aziz Technician?" in text
    # Cancel, then Back: the filtered list the admin came from, not the whole list
    await admin.press("Cancel", f"Request #{slow}")
    text = await admin.press("« Back", "Stuck workflows: 3.")
    assert "Filter: repair" in text
    await admin.press_prefix(f"#{slow} ", f"Request #{slow}")
    await admin.press("Reassign", "choose an active technician (page 1 of 1)")
    await admin.press("Aziz Technician · 0 active", "to Aziz Technician?")
    text = await admin.press("Confirm", "Done:")
    assert f"Done: request #{slow} is now assigned to Aziz Technician." in text
    aziz = await db.fetchrow("SELECT * FROM users WHERE full_name = 'Aziz Technician'")
    assert (
        await db.fetchval("SELECT assignee_id FROM service_requests WHERE id = $1", slow)
        == (aziz["id"])
    )
    assert await db.fetchval(
        "SELECT count(*) FROM pending_notifications WHERE request_id = $1 AND chat_id = $2 "
        "AND template_key = 'request.waiting_for_you'",
        slow,
        aziz["telegram_id"],
    )

    # --- batch over a filter, after a review that says how many -----------------------------
    # "Stuck workflows" after Done: the same filtered list
    text = await admin.press("Stuck workflows", "Stuck workflows: 2.")
    assert "Filter: repair" in text
    text = await admin.press("Batch action", "Batch recovery of the 2 stuck requests")
    assert "matching: repair" in text
    text = await admin.press("Force transition", "Review:")
    assert "Review: force transition on 2 stuck requests (repair)." in text
    repairs = await db.fetch(
        "SELECT id FROM service_requests WHERE workflow_type = 'repair' AND status = 'active'"
    )
    listed = next(line for line in text.splitlines() if line.startswith("Requests: "))
    numbers = listed.removeprefix("Requests: ").split(", ")
    assert len(numbers) == 2 and set(numbers) <= {f"#{r['id']}" for r in repairs}
    batch_skip = admin.data_of("Confirm")
    text = await admin.press("Confirm", "Batch force transition done")
    assert "2 succeeded, 0 stale (moved since the review), 0 failed." in text
    batch_rows = await db.fetch(
        "SELECT * FROM workflow_recovery_log WHERE batch_id IS NOT NULL AND success"
    )
    assert len(batch_rows) == 2 and len({r["batch_id"] for r in batch_rows}) == 1
    succeeded_line = next(line for line in text.splitlines() if line.startswith("Succeeded:"))
    assert sorted(succeeded_line.removeprefix("Succeeded: ").split(", ")) == sorted(
        f"#{r['request_id']}" for r in batch_rows
    )
    states = dict(
        await db.fetch(
            "SELECT description, current_state FROM service_requests WHERE workflow_type = 'repair'"
        )
    )
    assert states["No signal since Monday"] == "in_work"
    assert states["Replace damaged cable"] == "quality_check"
    # "Stuck workflows" after the batch: the list of the batch's filter
    assert StuckListCb.unpack(admin.data_of("Stuck workflows")) == StuckListCb(wf="repair")
    world = await _world(db)
    admin.push(batch_skip)  # the reviewed batch again
    text = await admin.wait("This review is outdated")
    assert await _world(db) == world
    # its "Stuck workflows" leads back to the list the admin was on (the repair filter)
    assert StuckListCb.unpack(admin.data_of("Stuck workflows")) == StuckListCb(wf="repair")

    # --- recovery history --------------------------------------------------------------
    await admin.press("Stuck workflows", "No stuck workflows.\nFilter: repair")
    # one history screen for the whole menu: the stuck list opens it too
    text = await admin.press("Recovery history", "Recovery history. Actions: 7. Page 1 of 1.")
    assert f"✓ forced transition: request {review} — Admin" in text
    assert "✓ reset to the previous state" in text and "technician sent to the wrong" in text
    assert f"✗ forced transition refused: request {review} — Admin" in text  # the repeat
    await admin.press("« Back", "Workflow recovery. Choose a section:")
    await admin.press("Stuck workflows", "Stuck workflows: 1.")
    await admin.press_prefix("#", "Request #")
    text = await admin.press("Recovery log", "Recovery history of request #")
    # one request's log: the lines of the recovery history screen, only that request's
    admin.push(StuckHistoryCb(request_id=review).pack())
    text = await admin.wait(f"Recovery history of request #{review}")
    assert f"✓ forced transition: request {review} — Admin" in text
    assert f"✗ forced transition refused: request {review} — Admin [it changed meanwhile]" in text
    assert "reset to the previous state" not in text  # another request's

    # --- a button of an older layout: "outdated" and a fresh menu ----------------------------
    query_id = admin.push("wrs:0")
    answer = await api.wait_for(
        lambda: next((a for a in api.callback_answers if a.query_id == query_id), None)
    )
    assert answer.show_alert and "This menu is outdated" in (answer.text or "")
    await admin.wait("Workflow recovery. Choose a section:")
    assert "Stuck workflows" in admin.buttons()

    # --- every callback the admin made was answered ------------------------------------
    await api.wait_for(lambda: set(admin.queries) <= {a.query_id for a in api.callback_answers}, 20)

    await _strangers_are_refused(api, db, router_job)


async def _strangers_are_refused(api: FakeTelegramAPI, db: asyncpg.Pool, request_id: int) -> None:
    row = await db.fetchrow("SELECT * FROM service_requests WHERE id = $1", request_id)
    technician = await db.fetchval("SELECT id FROM users WHERE full_name = 'Aziz Technician'")
    stranger = Admin(api, STRANGER_ID)
    api.add_user(STRANGER_ID, "Stranger")
    api.push_message(STRANGER_ID, "/start")
    stranger.message_id = (await api.wait_for(lambda: api.last_message(STRANGER_ID)))["message_id"]
    before = await _world(db)
    ident = {"request_id": request_id, "version": row["version"]}
    forged = [StuckListCb(), StuckDetailCb(request_id=request_id), StuckHistoryCb()]
    forged += [StuckAssigneesCb(**ident)]
    for code in ActionCode:
        arg = technician if code is ActionCode.REASSIGN else 0
        forged += [StuckActionCb(action=code, arg=arg, step=step, **ident) for step in (0, 1, 2)]
        forged.append(StuckBatchCb(action=code, wf="connection", st="new", arg=arg))
    forged += [StuckBatchRunCb(token="deadbeef", step=step) for step in (1, 2)]
    query_ids = [stranger.push(data.pack()) for data in forged]

    answers = await api.wait_for(
        lambda: (
            found
            if len(found := [a for a in api.callback_answers if a.query_id in set(query_ids)])
            == len(query_ids)
            else None
        ),
        30,
    )
    assert all("administrators only" in (a.text or "") for a in answers)
    assert await _world(db) == before
