"""The admin alert path: dedupe, rate limit with a digest, per-admin mutes, transactional
delivery through the outbox, and the mute buttons reaching Telegram as an inline keyboard."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from bot.i18n import create_i18n
from bot.notification_texts import make_renderer
from handlers.admin.alerts import offer_markup
from handlers.callbacks import AlertMuteCb
from recovery.alerts import AdminAlerts, AlertKind, AlertOutcome, AlertPolicy
from recovery.notifications import QUEUE_FULL_TEMPLATE, NotificationRetryManager
from recovery.workflows import WorkflowRecoveryManager
from tests.factories import make_request, make_user
from tests.fakes.telegram_api import BAD_GATEWAY
from tests.integration.notification_support import enqueue_text, open_harness


async def _outbox(pool: asyncpg.Pool, template_key: str | None = None) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT * FROM pending_notifications WHERE $1::text IS NULL OR template_key = $1 "
        "ORDER BY id",
        template_key,
    )


def _alerts(pool: asyncpg.Pool, **policy: Any) -> AdminAlerts:
    return AdminAlerts(pool, policy=AlertPolicy(**policy))


def _buttons(params: dict[str, Any]) -> list[list[tuple[str, str]]]:
    """The mute buttons the Telegram layer makes from an outbox row (English texts), as
    rows of (text, callback data); the row itself holds no text and no callback data."""
    assert "buttons" not in params
    markup = offer_markup(params["mute"], lambda msgid: msgid)
    assert markup is not None
    return [
        [(button.text, str(button.callback_data)) for button in row]
        for row in markup.inline_keyboard
    ]


async def _raise(alerts: AdminAlerts, key: str, kind: AlertKind = AlertKind.ERROR) -> Any:
    return await alerts.raise_alert(
        kind, key, "admin.text", {"text": f"alert {key}"}, summary=key.upper()
    )


async def test_an_alert_reaches_every_admin_with_mute_buttons(pool: asyncpg.Pool) -> None:
    first = await make_user(pool, role="admin")
    second = await make_user(pool, role="admin")
    alerts = AdminAlerts(pool, admin_ids=[999_001])
    result = await _raise(alerts, "e-1")
    assert result.outcome is AlertOutcome.SENT
    assert result.recipients == 3
    rows = await _outbox(pool)
    assert {r["chat_id"] for r in rows} == {first["telegram_id"], second["telegram_id"], 999_001}
    buttons = _buttons(rows[0]["params"])
    assert [text for text, _ in buttons[0]] == ["Mute for 1 hour", "Mute for 24 hours"]
    unpacked = AlertMuteCb.unpack(buttons[0][0][1])
    assert (unpacked.kind, unpacked.seconds) == ("error", 3600)
    assert all(len(data.encode()) <= 64 for _, data in buttons[0])


async def test_a_repeated_key_within_the_window_is_sent_once(pool: asyncpg.Pool) -> None:
    await make_user(pool, role="admin")
    alerts = _alerts(pool, dedupe_window_s=600)
    assert (await _raise(alerts, "same")).outcome is AlertOutcome.SENT
    for _ in range(3):
        assert (await _raise(alerts, "same")).outcome is AlertOutcome.DUPLICATE
    assert (await _raise(alerts, "other")).outcome is AlertOutcome.SENT
    assert len(await _outbox(pool)) == 2
    row = await pool.fetchrow("SELECT * FROM admin_alerts WHERE dedupe_key = 'same'")
    assert row["duplicates"] == 3
    # after the window the same key alerts again
    await pool.execute("UPDATE admin_alerts SET created_at = now() - interval '11 minutes'")
    assert (await _raise(alerts, "same")).outcome is AlertOutcome.SENT
    assert len(await _outbox(pool)) == 3


async def test_many_alerts_at_once_become_one_digest(pool: asyncpg.Pool) -> None:
    admins = [await make_user(pool, role="admin") for _ in range(2)]
    alerts = _alerts(pool, rate_limit=2, rate_window_s=300)
    outcomes = [(await _raise(alerts, f"e-{i}")).outcome for i in range(5)]
    outcomes.append((await _raise(alerts, "h-1", AlertKind.HEALTH)).outcome)
    assert outcomes == [AlertOutcome.SENT] * 2 + [AlertOutcome.QUEUED] * 4
    assert len(await _outbox(pool, "admin.text")) == 2 * len(admins)

    assert await alerts.flush_digest() == 4
    digests = await _outbox(pool, "admin.alert_digest")
    assert {d["chat_id"] for d in digests} == {a["telegram_id"] for a in admins}
    params = digests[0]["params"]
    assert (params["total"], params["error"], params["health"], params["stuck"]) == (4, 3, 1, 0)
    assert params["details"] == "E-2, E-3, E-4, H-1"
    assert [row[0][0] for row in _buttons(params)] == [
        "Mute error alerts for 1 hour",
        "Mute health alerts for 1 hour",
    ]
    statuses = await pool.fetch("SELECT status, count(*) FROM admin_alerts GROUP BY status")
    assert {r["status"]: r["count"] for r in statuses} == {"sent": 2, "digested": 4}
    assert await alerts.flush_digest() == 0
    assert len(await _outbox(pool, "admin.alert_digest")) == 2

    # the digest is rendered in the admin's language
    renderer = make_renderer(create_i18n())
    text = renderer("admin.alert_digest", params, "en")
    assert text.startswith("4 admin alerts arrived together.")
    assert "Critical errors: 3, health changes: 1" in text


async def test_a_mute_silences_one_kind_for_one_admin_until_it_ends(pool: asyncpg.Pool) -> None:
    muting = await make_user(pool, role="admin")
    other = await make_user(pool, role="admin")
    alerts = _alerts(pool, dedupe_window_s=0)
    until = await alerts.mute(
        chat_id=muting["telegram_id"], kind="error", duration_s=3600, muted_by=muting["id"]
    )
    assert await alerts.muted_until(chat_id=muting["telegram_id"], kind="error") == until

    await _raise(alerts, "e-1", AlertKind.ERROR)
    assert [r["chat_id"] for r in await _outbox(pool)] == [other["telegram_id"]]
    await _raise(alerts, "h-1", AlertKind.HEALTH)  # another kind still reaches both
    assert len(await _outbox(pool)) == 3

    await pool.execute("UPDATE admin_alert_mutes SET muted_until = now() - interval '1 second'")
    await _raise(alerts, "e-2", AlertKind.ERROR)
    assert len(await _outbox(pool)) == 5

    await alerts.mute(chat_id=muting["telegram_id"], kind="error", duration_s=86400, muted_by=None)
    assert await alerts.unmute(chat_id=muting["telegram_id"], kind="error") is not None
    assert await alerts.unmute(chat_id=muting["telegram_id"], kind="error") is None
    with pytest.raises(ValueError):
        await alerts.mute(chat_id=1, kind="error", duration_s=5, muted_by=None)
    with pytest.raises(ValueError):
        await alerts.mute(chat_id=1, kind="weather", duration_s=3600, muted_by=None)


async def test_a_digest_leaves_out_the_kinds_an_admin_muted(pool: asyncpg.Pool) -> None:
    muting = await make_user(pool, role="admin")
    other = await make_user(pool, role="admin")
    alerts = _alerts(pool, rate_limit=1)
    await _raise(alerts, "first")
    await _raise(alerts, "e-1", AlertKind.ERROR)
    await _raise(alerts, "s-1", AlertKind.STUCK)
    await alerts.mute(chat_id=muting["telegram_id"], kind="stuck", duration_s=3600, muted_by=None)
    assert await alerts.flush_digest() == 2
    digests = {d["chat_id"]: d["params"] for d in await _outbox(pool, "admin.alert_digest")}
    assert (digests[other["telegram_id"]]["total"], digests[other["telegram_id"]]["stuck"]) == (
        2,
        1,
    )
    assert (digests[muting["telegram_id"]]["total"], digests[muting["telegram_id"]]["stuck"]) == (
        1,
        0,
    )


async def test_an_alert_in_a_rolled_back_transaction_is_never_sent(pool: asyncpg.Pool) -> None:
    await make_user(pool, role="admin")
    alerts = _alerts(pool)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with pool.acquire() as conn, conn.transaction():
            result = await alerts.raise_alert("error", "k", "admin.text", {"text": "x"}, conn=conn)
            assert result.outcome is AlertOutcome.SENT
            raise Boom
    assert await _outbox(pool) == []
    assert await pool.fetchval("SELECT count(*) FROM admin_alerts") == 0


async def test_the_sender_gets_the_buttons_translated_for_the_recipient(
    pool: asyncpg.Pool,
) -> None:
    admin = await make_user(pool, role="admin", language="ru")
    alerts = _alerts(pool)
    await _raise(alerts, "e-1")
    i18n = create_i18n()
    sent: list[dict[str, Any]] = []

    async def sender(
        chat_id: int, text: str, *, mute: Any = None, locale: str | None = None
    ) -> int:
        sent.append({"chat_id": chat_id, "text": text, "mute": mute, "locale": locale})
        return 1

    manager = NotificationRetryManager(pool, sender=sender, renderer=make_renderer(i18n))
    result = await manager.drain_once()
    assert result.sent == 1
    assert sent[0]["chat_id"] == admin["telegram_id"]
    assert sent[0]["locale"] == "ru"
    locale = sent[0]["locale"]
    markup = offer_markup(sent[0]["mute"], lambda msgid: i18n.gettext(msgid, locale=locale))
    assert markup is not None
    texts = [button.text for button in markup.inline_keyboard[0]]
    assert texts == [
        i18n.gettext("Mute for 1 hour", locale="ru"),
        i18n.gettext("Mute for 24 hours", locale="ru"),
    ]
    assert texts[0] != "Mute for 1 hour"
    assert offer_markup({"kinds": ["nonsense"], "durations": [3600]}, str) is None


async def test_the_stuck_digest_takes_the_alert_path(pool: asyncpg.Pool) -> None:
    muting = await make_user(pool, role="admin")
    other = await make_user(pool, role="admin")
    client = await make_user(pool)
    request = await make_request(pool, client_id=client["id"], hours_in_state=30)
    alerts = _alerts(pool)
    await alerts.mute(chat_id=muting["telegram_id"], kind="stuck", duration_s=3600, muted_by=None)
    result = await WorkflowRecoveryManager(pool).alert_new_stuck(alerts=alerts)
    assert result.new_request_ids == [request["id"]]
    assert result.digests == 1
    rows = await _outbox(pool, "admin.stuck_digest")
    assert [r["chat_id"] for r in rows] == [other["telegram_id"]]
    assert rows[0]["params"]["ids"] == f"#{request['id']}"
    assert AlertMuteCb.unpack(_buttons(rows[0]["params"])[0][0][1]).kind == "stuck"
    assert await pool.fetchval("SELECT kind FROM admin_alerts") == "stuck"
    again = await WorkflowRecoveryManager(pool).alert_new_stuck(alerts=alerts)
    assert again.new_request_ids == [] and len(await _outbox(pool)) == 1


async def test_the_retry_queue_full_alert_takes_the_alert_path(pool: asyncpg.Pool) -> None:
    muting = await make_user(pool, role="admin")
    other = await make_user(pool, role="admin")
    alerts = _alerts(pool)
    await alerts.mute(chat_id=muting["telegram_id"], kind="system", duration_s=3600, muted_by=None)
    async with open_harness(pool) as harness:
        clients = [await make_user(pool) for _ in range(2)]
        for client in clients:
            harness.api.add_user(client["telegram_id"], "Client")
        for i, client in enumerate(clients):
            await enqueue_text(pool, client["telegram_id"], f"n{i}")
        harness.api.fail_next("sendMessage", **BAD_GATEWAY, times=2)
        await harness.manager(queue_max_size=1, concurrency=1, alerts=alerts).drain_once()
    alert = await pool.fetchrow("SELECT * FROM admin_alerts")
    assert (alert["kind"], alert["status"], alert["recipients"]) == ("system", "sent", 1)
    rows = await _outbox(pool, QUEUE_FULL_TEMPLATE)
    assert [r["chat_id"] for r in rows] == [other["telegram_id"]]
    assert _buttons(rows[0]["params"])[0][0][0] == "Mute for 1 hour"
