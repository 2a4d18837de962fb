"""Each Telegram answer to a notification and the state it leaves the outbox row in.

The sends go through a real aiogram ``Bot`` to the HTTP Bot API fake, which answers with
Telegram's own error bodies (429 with ``parameters.retry_after``, 403 "Forbidden: bot was
blocked by the user", 400 "Bad Request: chat not found", 502 "Bad Gateway", 400 with
``parameters.migrate_to_chat_id``).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from bot.i18n import create_i18n
from database import outbox, users
from recovery.notification_outcomes import TELEGRAM_UNREACHABLE_REASON
from recovery.notifications import RetryPolicy
from recovery.rate_limit import TelegramRateLimiter
from tests.factories import make_user
from tests.fakes.telegram_api import (
    BAD_GATEWAY,
    BOT_BLOCKED,
    migrate_to_chat,
    retry_after,
)
from tests.integration.notification_support import (
    Harness,
    enqueue_text,
    make_due,
    open_harness,
    queue_entries,
    row,
)


@pytest_asyncio.fixture
async def harness(pool: asyncpg.Pool) -> AsyncIterator[Harness]:
    async with open_harness(pool) as h:
        yield h


async def _user(h: Harness, *, language: str = "en") -> asyncpg.Record:
    user = await make_user(h.pool, language=language)
    h.api.add_user(user["telegram_id"], "Client", language)
    return user


async def test_success_keeps_the_message_id_renders_in_the_recipients_language_and_escapes(
    harness: Harness,
) -> None:
    user = await _user(harness, language="ru")
    async with harness.pool.acquire() as conn:
        status_id = await outbox.enqueue(
            conn,
            idempotency_key="transition:1:client",
            chat_id=user["telegram_id"],
            recipient_id=user["id"],
            template_key="request.waiting_for_you",
            params={"request_id": 7, "workflow_type": "connection", "state": "review"},
        )
    raw = '<b>Tom & "Jerry"</b> <script>alert(1)</script>'
    text_id = await enqueue_text(harness.pool, user["telegram_id"], raw, recipient_id=user["id"])

    result = await harness.manager().drain_once()

    assert (result.claimed, result.sent) == (2, 2)
    i18n = create_i18n("en")
    expected = i18n.gettext(
        "Request #{request_id} ({workflow_type}) is waiting for you: {state}.", locale="ru"
    ).format(
        request_id=7,
        workflow_type=i18n.gettext("connection", locale="ru"),
        state=i18n.gettext("review", locale="ru"),
    )
    assert expected.startswith("Заявка")
    # the user sees the raw text: escaped for HTML, so no tag was parsed or rejected
    assert harness.texts_to(user["telegram_id"]) == [expected, raw]
    messages = harness.api.messages_to(user["telegram_id"])
    assert "entities" not in messages[1]
    for row_id, message in zip((status_id, text_id), messages, strict=True):
        sent = await row(harness.pool, row_id)
        assert sent["status"] == "sent"
        assert sent["telegram_message_id"] == message["message_id"]
        assert (sent["attempts"], sent["claimed_by"], sent["lease_until"]) == (1, None, None)
        assert sent["sent_at"] is not None


async def test_an_idempotency_key_enqueues_one_notification_per_business_event(
    harness: Harness,
) -> None:
    user = await _user(harness)
    first = await enqueue_text(harness.pool, user["telegram_id"], "once", key="event:42")
    async with harness.pool.acquire() as conn:
        second = await outbox.enqueue(
            conn,
            idempotency_key="event:42",
            chat_id=user["telegram_id"],
            template_key="admin.text",
            params={"text": "twice"},
        )
    await harness.manager().drain_once()

    assert first is not None and second is None
    assert await harness.pool.fetchval("SELECT count(*) FROM pending_notifications") == 1
    assert harness.texts_to(user["telegram_id"]) == ["once"]


async def test_429_waits_exactly_retry_after_without_an_attempt_and_pauses_every_send(
    harness: Harness,
) -> None:
    first, second = await _user(harness), await _user(harness)
    first_id = await enqueue_text(harness.pool, first["telegram_id"], "first")
    second_id = await enqueue_text(harness.pool, second["telegram_id"], "second")
    harness.api.fail_next("sendMessage", **retry_after(7))
    now = [1000.0]  # the process clock stands still: every wait is computed from this instant
    limiter = TelegramRateLimiter(clock=lambda: now[0])
    manager = harness.manager(rate_limiter=limiter, clock=lambda: now[0], concurrency=1)

    result = await manager.drain_once()

    assert (result.rate_limited, result.deferred, result.sent) == (1, 1, 0)
    limited = await row(harness.pool, first_id)
    assert limited["status"] == "pending"
    assert limited["attempts"] == 0
    assert limited["due_in_s"] == pytest.approx(7.0, abs=1e-6)
    assert "retry after 7" in limited["last_error"]
    assert await queue_entries(harness.pool, first_id) == []
    # the other chat was not sent to: the pause holds every send, not only that chat's
    assert len(harness.api.calls("sendMessage")) == 1
    held = await row(harness.pool, second_id)
    assert (held["status"], held["attempts"]) == ("pending", 0)
    assert held["due_in_s"] == pytest.approx(7.0, abs=1e-6)
    assert limiter.pause_remaining() == pytest.approx(7.0)
    # ... and every instance's claims: even rows made due now are not claimed during the pause
    pause_left = await harness.pool.fetchval(
        "SELECT extract(epoch FROM paused_until - now()) FROM notification_sender_state"
    )
    assert 6.0 < pause_left <= 7.0
    await make_due(harness.pool, first_id)
    await make_due(harness.pool, second_id)
    other_instance = harness.manager()
    assert (await other_instance.drain_once()).claimed == 0


async def test_502_schedules_a_retry_with_exponential_backoff_and_full_jitter(
    harness: Harness,
) -> None:
    user = await _user(harness)
    row_id = await enqueue_text(harness.pool, user["telegram_id"], "hello")
    policy = RetryPolicy(max_attempts=5, base_delay_s=30.0, max_delay_s=3600.0)
    manager = harness.manager(policy=policy, rng=random.Random(11))
    expected = random.Random(11)

    harness.api.fail_next("sendMessage", **BAD_GATEWAY)
    result = await manager.drain_once()

    assert result.retried == 1
    failed = await row(harness.pool, row_id)
    assert (failed["status"], failed["attempts"]) == ("retrying", 1)
    assert "Bad Gateway" in failed["last_error"]
    first_delay = policy.delay_s(0, expected)
    assert 0 <= failed["due_in_s"] <= 30.0
    assert failed["due_in_s"] == pytest.approx(first_delay, abs=1e-5)
    [entry] = await queue_entries(harness.pool, row_id)
    assert (entry["status"], entry["attempt"], entry["error_category"]) == (
        "waiting",
        1,
        "transient",
    )
    assert entry["retry_at"] == failed["next_attempt_at"]

    # not due yet: nothing is claimed
    assert (await manager.drain_once()).claimed == 0
    await make_due(harness.pool, row_id)
    harness.api.fail_next("sendMessage", **BAD_GATEWAY)
    await manager.drain_once()

    again = await row(harness.pool, row_id)
    assert (again["status"], again["attempts"]) == ("retrying", 2)
    assert 0 <= again["due_in_s"] <= 60.0  # the cap doubled: base * 2**1
    assert again["due_in_s"] == pytest.approx(policy.delay_s(1, expected), abs=1e-5)
    entries = await queue_entries(harness.pool, row_id)
    assert [(e["attempt"], e["status"]) for e in entries] == [(1, "done"), (2, "waiting")]

    await make_due(harness.pool, row_id)
    await manager.drain_once()
    delivered = await row(harness.pool, row_id)
    assert (delivered["status"], delivered["attempts"]) == ("sent", 3)
    assert [e["status"] for e in await queue_entries(harness.pool, row_id)] == ["done", "done"]
    assert harness.texts_to(user["telegram_id"]) == ["hello"]


async def test_repeated_5xx_ends_in_a_dead_letter_that_is_kept_with_its_last_error(
    harness: Harness,
) -> None:
    user = await _user(harness)
    row_id = await enqueue_text(harness.pool, user["telegram_id"], "never")
    manager = harness.manager(policy=RetryPolicy(max_attempts=3, base_delay_s=0, max_delay_s=0))
    harness.api.fail_next("sendMessage", **BAD_GATEWAY, times=3)

    for _ in range(3):
        await manager.drain_once()

    dead = await row(harness.pool, row_id)
    # dead of its budget while Telegram did not answer: put back when it answers again
    assert (dead["status"], dead["attempts"], dead["dead_reason"]) == (
        "dead", 3, TELEGRAM_UNREACHABLE_REASON,
    )  # fmt: skip
    assert "Bad Gateway" in dead["last_error"]
    assert [e["status"] for e in await queue_entries(harness.pool, row_id)] == ["done", "dead"]
    assert (await manager.drain_once()).claimed == 0
    assert len(harness.api.calls("sendMessage")) == 3
    failing, total = await manager.list_failing()
    assert total == 1 and failing[0].id == row_id and "Bad Gateway" in str(failing[0].last_error)


async def test_403_blocked_is_permanent_and_skips_the_user_until_they_write_again(
    harness: Harness,
) -> None:
    user = await _user(harness)
    manager = harness.manager()
    first = await enqueue_text(harness.pool, user["telegram_id"], "one", recipient_id=user["id"])
    harness.api.fail_next("sendMessage", **BOT_BLOCKED, chat_id=user["telegram_id"])

    await manager.drain_once()

    blocked = await row(harness.pool, first)
    assert (blocked["status"], blocked["dead_reason"], blocked["attempts"]) == (
        "skipped",
        "bot_blocked",
        1,
    )
    assert "bot was blocked by the user" in blocked["last_error"]
    assert await queue_entries(harness.pool, first) == []
    assert (await users.get(harness.pool, user["id"]))["blocked_bot_at"] is not None

    second = await enqueue_text(harness.pool, user["telegram_id"], "two", recipient_id=user["id"])
    await manager.drain_once()
    skipped = await row(harness.pool, second)
    assert (skipped["status"], skipped["dead_reason"], skipped["attempts"]) == (
        "skipped",
        "recipient unreachable",
        0,
    )
    assert len(harness.api.calls("sendMessage")) == 1  # no second send to a blocked user

    # the user writes to the bot again (the user middleware refreshes them)
    await users.upsert_from_telegram(
        harness.pool,
        telegram_id=user["telegram_id"],
        full_name="Client",
        username=None,
        language="en",
    )
    third = await enqueue_text(harness.pool, user["telegram_id"], "three", recipient_id=user["id"])
    await manager.drain_once()
    assert (await row(harness.pool, third))["status"] == "sent"
    assert harness.texts_to(user["telegram_id"]) == ["three"]


async def test_400_chat_not_found_is_permanent_and_marks_the_user(harness: Harness) -> None:
    user = await make_user(harness.pool)  # never started a chat with the bot: the fake has none
    row_id = await enqueue_text(harness.pool, user["telegram_id"], "hi", recipient_id=user["id"])

    result = await harness.manager().drain_once()

    assert result.skipped == 1
    missing = await row(harness.pool, row_id)
    assert (missing["status"], missing["dead_reason"]) == ("skipped", "chat_not_found")
    assert "chat not found" in missing["last_error"]
    assert await queue_entries(harness.pool, row_id) == []
    assert (await users.get(harness.pool, user["id"]))["blocked_bot_at"] is not None


async def test_a_group_that_became_a_supergroup_is_followed_and_sent_at_once(
    harness: Harness,
) -> None:
    old_chat, new_chat = -4_001, -1_001_234
    harness.api.add_user(old_chat, "Group")
    harness.api.add_user(new_chat, "Supergroup")
    row_id = await enqueue_text(harness.pool, old_chat, "to the group")
    later_id = await enqueue_text(harness.pool, old_chat, "later")
    await harness.pool.execute(
        "UPDATE pending_notifications SET next_attempt_at = now() + interval '1 hour' "
        "WHERE id = $1",
        later_id,
    )
    harness.api.fail_next("sendMessage", **migrate_to_chat(new_chat), chat_id=old_chat)

    result = await harness.manager().drain_once()

    assert (result.migrated, result.sent) == (1, 1)
    sent = await row(harness.pool, row_id)
    assert (sent["status"], sent["chat_id"], sent["attempts"]) == ("sent", new_chat, 1)
    assert harness.texts_to(new_chat) == ["to the group"]
    assert (await row(harness.pool, later_id))["chat_id"] == new_chat


async def test_an_unexpected_error_is_recorded_and_retried_within_the_same_limits(
    harness: Harness,
) -> None:
    user = await _user(harness)
    parse_id = await enqueue_text(harness.pool, user["telegram_id"], "x")
    async with harness.pool.acquire() as conn:
        unknown_id = await outbox.enqueue(
            conn,
            idempotency_key="unknown-template",
            chat_id=user["telegram_id"],
            template_key="no.such.template",
        )
    harness.api.fail_next(
        "sendMessage",
        error_code=400,
        description='Bad Request: can\'t parse entities: Unsupported start tag "x" at byte '
        "offset 0",
    )

    manager = harness.manager(concurrency=1)
    result = await manager.drain_once()
    assert await manager.error_handler.flush()  # type: ignore[union-attr]

    assert result.retried == 2
    for row_id in (parse_id, unknown_id):
        failed = await row(harness.pool, row_id)
        assert (failed["status"], failed["attempts"]) == ("retrying", 1)
        assert [e["status"] for e in await queue_entries(harness.pool, row_id)] == ["waiting"]
    recorded = {
        r["error_type"].rsplit(".", 1)[-1]
        for r in await harness.pool.fetch("SELECT error_type FROM error_records")
    }
    assert recorded == {"TelegramBadRequest", "UnknownTemplateError"}
