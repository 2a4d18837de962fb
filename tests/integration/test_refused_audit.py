"""The audit trail says what happened: on every admin screen with an audited action, a
refused action is recorded as refused with its reason (``admin_audit_log``,
``workflow_recovery_log``, ``inventory_reconciliation_log``), never as a success, and the
recovery history shows it as refused, with why. Through the real dispatcher on PostgreSQL.

Retrying a dead notification whose request has moved on since says so on the confirmation
screen before anything is sent; a confirmation from a screen that did not say so is shown
again instead of sending."""

from __future__ import annotations

import asyncpg
import pytest

from database import outbox
from handlers.callbacks import (
    ActionCode,
    AlertMuteCb,
    DiscrepancyCb,
    ErrorResolveCb,
    MenuCb,
    NotificationCb,
    StuckActionCb,
)
from recovery.actors import Actor
from tests.botstack import BotStack, make_stack
from tests.factories import make_material, make_request, make_user
from tests.fakes.telegram_api import parse_html
from tests.integration.notification_support import enqueue_text

ADMIN_TG = 555_000_321


async def _screen(stack: BotStack, data: str) -> str:
    """Press ``data`` as the admin; the text they see (edited screen or alert)."""
    before = len(stack.session.calls)
    await stack.feed(stack.callback(ADMIN_TG, data))
    shown = [
        getattr(call, "text", None) or ""
        for call in stack.session.calls[before:]
        if call.__api_method__ in ("editMessageText", "sendMessage", "answerCallbackQuery")
    ]
    return parse_html("\n".join(t for t in shown if t))[0]


async def _audit(pool: asyncpg.Pool, action: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT success, error_message, target_id FROM admin_audit_log WHERE action = $1 "
        "ORDER BY id",
        action,
    )


@pytest.fixture
async def stack(pool: asyncpg.Pool) -> BotStack:
    await make_user(pool, role="admin", telegram_id=ADMIN_TG, name="Ada <admin>")
    return make_stack(pool, admin_ids=[ADMIN_TG])


async def test_notification_retry_and_discard_refusals(pool: asyncpg.Pool, stack: BotStack) -> None:
    sent = await enqueue_text(pool, 42, "hello")
    await pool.execute("UPDATE pending_notifications SET status = 'sent' WHERE id = $1", sent)
    text = await _screen(stack, NotificationCb(action="retry_ok", notification_id=sent).pack())
    assert "cannot be retried now" in text
    text = await _screen(stack, NotificationCb(action="discard_ok", notification_id=sent).pack())
    assert "cannot be discarded now" in text
    text = await _screen(stack, NotificationCb(action="retry_ok", notification_id=987).pack())
    assert "does not exist" in text
    retries = await _audit(pool, "notification.retry")
    assert [(r["success"], r["error_message"]) for r in retries] == [
        (False, "not_retryable: sent"),
        (False, "not_found: notification 987"),
    ]
    (discard,) = await _audit(pool, "notification.discard")
    assert (discard["success"], discard["error_message"]) == (False, "not_discardable: sent")
    assert await pool.fetchval("SELECT status FROM pending_notifications") == "sent"

    history = await _screen(stack, MenuCb(section="history").pack())
    assert (
        f"✗ notification retry refused: notification {sent} — Ada <admin> "
        "[it was sent, discarded or is being sent]"
    ) in history
    assert f"✗ notification discard refused: notification {sent}" in history
    assert "✓ notification" not in history


async def test_inventory_fix_and_accept_refusals(pool: asyncpg.Pool, stack: BotStack) -> None:
    await make_material(pool, sku="cable <5m>", balance=10, ledger=7)
    await stack.services.inventory.check_now(Actor(None, "admin", ADMIN_TG))
    discrepancy = await pool.fetchval("SELECT id FROM inventory_discrepancies")
    fix = DiscrepancyCb(action="fix_ok", discrepancy_id=discrepancy).pack()
    assert "adjusted" in await _screen(stack, fix)
    assert "meanwhile" in await _screen(stack, fix)  # the same button again
    await _screen(stack, DiscrepancyCb(action="accept", discrepancy_id=discrepancy).pack())
    await stack.feed(stack.message(ADMIN_TG, "written off <broken>"))
    assert "meanwhile" in stack.session.texts_to(ADMIN_TG)[-1]
    await _screen(stack, DiscrepancyCb(action="fix_ok", discrepancy_id=424242).pack())

    fixes = await _audit(pool, "inventory.fix_one")
    assert [r["success"] for r in fixes] == [True, False, False]
    assert fixes[1]["error_message"].startswith("stale: ")
    assert fixes[2]["error_message"] == "not_found: discrepancy 424242"
    (accept,) = await _audit(pool, "inventory.accept")
    assert not accept["success"] and accept["error_message"].startswith("stale: ")
    refused = await pool.fetch(
        "SELECT reason FROM inventory_reconciliation_log WHERE action = 'refused' "
        "AND discrepancy_id = $1",
        discrepancy,
    )
    assert [r["reason"] for r in refused] == ["no longer open: fixed"] * 2
    history = await _screen(stack, MenuCb(section="history").pack())
    assert f"✗ discrepancy fix refused: discrepancy {discrepancy}" in history
    assert f"✗ discrepancy acceptance refused: discrepancy {discrepancy}" in history
    assert "[it changed meanwhile]" in history


async def test_error_and_alert_refusals(pool: asyncpg.Pool, stack: BotStack) -> None:
    assert "does not exist" in await _screen(stack, ErrorResolveCb(record_id=777).pack())
    (resolve,) = await _audit(pool, "error.resolve")
    assert (resolve["success"], resolve["error_message"]) == (False, "not_found: error group 777")
    assert "not available" in await _screen(stack, AlertMuteCb(kind="error", seconds=5).pack())
    (mute,) = await _audit(pool, "alert.mute")
    assert not mute["success"] and mute["error_message"].startswith("refused: ")
    assert await pool.fetchval("SELECT count(*) FROM admin_alert_mutes") == 0


async def test_a_stale_recovery_action_is_logged_refused_and_shown_so(
    pool: asyncpg.Pool, stack: BotStack
) -> None:
    client = await make_user(pool, role="client")
    request = await make_request(pool, client_id=client["id"], hours_in_state=30)
    force = StuckActionCb(
        action=ActionCode.FORCE, request_id=request["id"], version=1, step=2
    ).pack()
    assert "Done" in await _screen(stack, force)
    assert "changed since you opened it" in await _screen(stack, force)  # pressed twice
    rows = await pool.fetch("SELECT success, error_message FROM workflow_recovery_log ORDER BY id")
    assert [r["success"] for r in rows] == [True, False]
    assert rows[1]["error_message"].startswith("stale: ")
    history = await _screen(stack, MenuCb(section="history").pack())
    assert f"✗ forced transition refused: request {request['id']}" in history
    assert f"✓ forced transition: request {request['id']}" in history


async def test_retrying_a_notification_whose_request_moved_on_says_so_first(
    pool: asyncpg.Pool, stack: BotStack
) -> None:
    client = await make_user(pool, role="client")
    request = await make_request(pool, client_id=client["id"], state="review", role="controller")
    async with pool.acquire() as conn:
        dead = await outbox.enqueue(
            conn,
            idempotency_key="old-status",
            chat_id=client["telegram_id"],
            recipient_id=client["id"],
            template_key="request.status_changed",
            params={"request_id": request["id"], "workflow_type": "connection", "state": "review"},
            request_id=request["id"],
        )
    await pool.execute(
        "UPDATE pending_notifications SET status = 'dead', attempts = 5 WHERE id = $1", dead
    )
    # still current: the confirmation has no warning
    text = await _screen(stack, NotificationCb(action="retry", notification_id=dead).pack())
    assert f"Retry notification #{dead} now?" in text and "moved on" not in text
    # the request moves on (someone advanced it) after that screen was shown
    await pool.execute(
        "UPDATE service_requests SET current_state = 'in_work', owner_role = 'technician', "
        "version = version + 1 WHERE id = $1",
        request["id"],
    )
    text = await _screen(stack, NotificationCb(action="retry_ok", notification_id=dead).pack())
    assert f"Request #{request['id']} has moved on" in text
    assert "«review», the request is now «in work»" in text
    assert await pool.fetchval("SELECT status FROM pending_notifications WHERE id = $1", dead) == (
        "dead"
    )  # nothing sent on a confirmation that did not say so
    assert await _audit(pool, "notification.retry") == []
    # the retry-all confirmation counts it too
    text = await _screen(stack, "nr:retry_all")
    assert "1 of them speaks of a request that has moved on" in text
    # confirmed on the screen that said so: it goes
    text = await _screen(
        stack, NotificationCb(action="retry_ok", notification_id=dead, ack=1).pack()
    )
    assert "is due again" in text
    assert await pool.fetchval("SELECT status FROM pending_notifications WHERE id = $1", dead) == (
        "pending"
    )
    (retry,) = await _audit(pool, "notification.retry")
    assert retry["success"]
