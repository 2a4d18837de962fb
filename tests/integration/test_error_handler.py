"""``ErrorHandler`` on a real PostgreSQL: grouping (a storm is one row), one admin alert per
group and window, masking of what is stored, the category strategies (mark unreachable,
queue a failed send), resolve and regress, lookups and statistics for the admin screens.

Occurrences are written by the error pipeline in batches: a test that reads the tables
after errors without a strategy step calls ``handler.flush()`` first (what the flush task
does within ``ERROR_FLUSH_WINDOW_S``)."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest
from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.exceptions import AiogramError
from aiogram.methods import SendMessage

from recovery.actors import Actor
from recovery.error_stats import ErrorStatistics
from recovery.errors import (
    RESEND_TEMPLATE,
    ErrorCategory,
    ErrorHandler,
    ErrorSeverity,
    FailedSend,
    group_reference,
    normalize_message,
)
from recovery.exceptions import ConcurrentModificationError, InputValidationError
from tests.factories import make_user
from tests.fakes.telegram_api import BAD_GATEWAY, BOT_BLOCKED, DEFAULT_TOKEN, retry_after

ADMIN_ID = 555_000_001
ADMIN = Actor(ADMIN_ID, "admin", ADMIN_ID)  # resolves groups; stored by its user_id
BOT_TOKEN = "7123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0"


def telegram_error(
    error_code: int, description: str, parameters: dict[str, object] | None = None
) -> AiogramError:
    """The exception aiogram raises for Telegram's JSON error body on a sendMessage."""
    session = AiohttpSession()
    bot = Bot(DEFAULT_TOKEN, session=session)
    body: dict[str, object] = {"ok": False, "error_code": error_code, "description": description}
    if parameters:
        body["parameters"] = parameters
    method = SendMessage(chat_id=42, text="Your request #7 is open.")
    try:
        session.check_response(bot, method, error_code, json.dumps(body))
    except AiogramError as exc:
        return exc
    raise AssertionError("no error")


async def missing_column(pool: asyncpg.Pool, n: int) -> BaseException:
    """A real 42703 from PostgreSQL; the column name (and so the message) differs by ``n``."""
    try:
        await pool.fetch(f"SELECT col_{n} FROM service_requests WHERE id = {n}")
    except asyncpg.PostgresError as exc:
        return exc
    raise AssertionError("no error")


def concurrent(request_id: int, version: int) -> BaseException:
    try:
        raise ConcurrentModificationError("request", request_id, version)
    except ConcurrentModificationError as exc:
        return exc


@pytest.fixture
def handler(pool: asyncpg.Pool) -> ErrorHandler:
    return ErrorHandler(
        pool,
        admin_ids=(ADMIN_ID,),
        alert_window_s=3600,
        extra_secrets=(BOT_TOKEN,),
        store_timeout_s=60,
    )


async def _alerts(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT * FROM pending_notifications WHERE template_key = 'admin.error_alert' ORDER BY id"
    )


async def test_a_storm_of_1000_identical_errors_is_one_group_and_one_alert(
    pool: asyncpg.Pool, handler: ErrorHandler
) -> None:
    failures = [await missing_column(pool, n) for n in range(1000)]
    assert len({str(exc) for exc in failures}) == 1000  # every message differs

    records = []
    for start in range(0, 1000, 100):  # 100 at a time, concurrently
        batch = failures[start : start + 100]
        records += await asyncio.gather(*(handler.handle(exc) for exc in batch))

    rows = await pool.fetch("SELECT * FROM error_records")
    assert len(rows) == 1
    (row,) = rows
    assert row["occurrence_count"] == 1000
    assert row["category"] == "system"
    assert row["severity"] == "critical"
    assert row["status"] == "open"
    assert {r.reference for r in records} == {row["reference"]}
    # the critical group is written at once (the alert names it): each batch of 100 saw
    # its own occurrences counted
    assert max(r.occurrence_count for r in records) == 1000
    assert sum(r.alerted for r in records) == 1
    alerts = await _alerts(pool)
    assert len(alerts) == 1
    assert alerts[0]["chat_id"] == ADMIN_ID
    assert alerts[0]["params"]["reference"] == row["reference"]


async def test_the_next_alert_comes_after_the_window(
    pool: asyncpg.Pool, handler: ErrorHandler
) -> None:
    first = await handler.handle(await missing_column(pool, 1))
    second = await handler.handle(await missing_column(pool, 2))
    assert first.alerted and not second.alerted
    # an hour and a bit later (the clock moved: the last alert is older than the window)
    await pool.execute(
        "UPDATE error_records SET last_alerted_at = now() - interval '61 minutes' WHERE id = $1",
        first.record_id,
    )
    third = await handler.handle(await missing_column(pool, 3))
    assert third.alerted
    assert len(await _alerts(pool)) == 2


async def test_different_errors_are_different_groups(
    pool: asyncpg.Pool, handler: ErrorHandler
) -> None:
    a = await handler.handle(concurrent(1, 1))
    b = await handler.handle(concurrent(2, 5))  # same kind, other ids: same group
    c = await handler.handle(InputValidationError("description", "longer than 1000"))
    d = await handler.handle(await missing_column(pool, 1))
    assert a.reference == b.reference
    assert len({a.reference, c.reference, d.reference}) == 3
    assert await pool.fetchval("SELECT count(*) FROM error_records") == 3
    assert a.category is ErrorCategory.BUSINESS_LOGIC
    assert c.category is ErrorCategory.DATA
    # business and data errors alert nobody
    assert len(await _alerts(pool)) == 1


async def test_resolve_a_group_and_see_it_come_back(
    pool: asyncpg.Pool, handler: ErrorHandler
) -> None:
    first = await handler.handle(await missing_column(pool, 1))
    assert first.reference is not None
    resolved = await handler.resolve_group(f"  {first.reference.lower()} ", resolved_by=ADMIN)
    assert resolved is not None
    assert resolved.status == "resolved"
    assert resolved.resolved_by == ADMIN_ID
    assert resolved.resolved_at is not None
    # resolving again changes nothing; an unknown reference is None
    again = await handler.resolve_group(first.reference, resolved_by=Actor(1, "admin"))
    assert again is not None and again.resolved_by == ADMIN_ID
    assert await handler.resolve_group("E-NOPE00", resolved_by=Actor(1, "admin")) is None
    # resolved groups leave the top list
    stats = ErrorStatistics(pool)
    assert (await stats.top_groups(page=0, page_size=10)).items == []

    back = await handler.handle(await missing_column(pool, 2))
    assert back.reference == first.reference
    assert back.status == "regressed"
    assert back.occurrence_count == 2
    # a regression of a critical group alerts at once, inside the alert window
    assert back.alerted
    group = await stats.lookup(first.reference)
    assert group is not None
    assert group["status"] == "regressed"
    top = await stats.top_groups(page=0, page_size=10)
    assert [g["reference"] for g in top.items] == [first.reference]


async def test_lookup_by_reference(pool: asyncpg.Pool, handler: ErrorHandler) -> None:
    record = await handler.handle(concurrent(3, 1), context={"update_id": 123456701})
    assert record.reference is not None
    assert record.reference.startswith("E-") and len(record.reference) == 8
    stats = ErrorStatistics(pool)
    assert await stats.lookup(record.reference) is None  # not written yet
    assert await handler.flush()
    group = await stats.lookup(record.reference.lower())
    assert group is not None
    assert group["reference"] == record.reference
    assert group["category"] == ErrorCategory.BUSINESS_LOGIC
    assert group["severity"] == ErrorSeverity.LOW
    assert group["error_type"].endswith("ConcurrentModificationError")
    assert (
        group["location"] is not None
        and "tests/integration/test_error_handler.py" in (group["location"])
    )
    assert group["context"]["update_id"] == 123456701
    assert group["context"]["reason"] == "concurrent_modification"
    assert await stats.lookup("E-ZZZZZZ") is None


async def test_sensitive_data_is_masked_before_it_is_stored(
    pool: asyncpg.Pool, handler: ErrorHandler
) -> None:
    try:
        raise RuntimeError(
            f"call +998 90 123 45 67 via https://api.telegram.org/bot{BOT_TOKEN}/sendMessage "
            "card 4111 1111 1111 1111 password=hunter2"
        )
    except RuntimeError as exc:
        record = await handler.handle(
            exc, context={"text": "my phone is +7 (912) 345-67-89", "nested": ["8 912 345 67 89"]}
        )
    assert await handler.flush()
    row = await pool.fetchrow("SELECT * FROM error_records WHERE fingerprint = $1",
                              record.fingerprint)  # fmt: skip
    stored = json.dumps(dict(row), default=str, ensure_ascii=False)
    for value in ("123 45 67", BOT_TOKEN, "AAHdqTcvCH1v", "4111 1111 1111 1111", "hunter2",
                  "345-67-89", "912 345 67 89"):  # fmt: skip
        assert value not in stored, value
    assert "RuntimeError" in row["stack_trace"]
    assert "***67" in row["message"] and "***1111" in row["message"]


async def test_a_failed_send_to_a_user_who_blocked_the_bot_marks_them(
    pool: asyncpg.Pool, handler: ErrorHandler
) -> None:
    user = await make_user(pool, telegram_id=42)
    record = await handler.handle(
        telegram_error(**BOT_BLOCKED),
        failed_send=FailedSend(42, text="hello", recipient_id=user["id"], idempotency_key="k1"),
    )
    assert record.category is ErrorCategory.NOTIFICATION
    assert "marked_unreachable" in record.actions
    assert "queued_resend" not in record.actions
    assert await pool.fetchval("SELECT blocked_bot_at FROM users WHERE id = $1", user["id"])
    assert await pool.fetchval("SELECT count(*) FROM pending_notifications") == 0


@pytest.mark.parametrize(
    "error", [BAD_GATEWAY, retry_after(35)], ids=["502 Bad Gateway", "429 retry after 35"]
)
async def test_a_transient_telegram_failure_queues_the_message_once(
    pool: asyncpg.Pool, handler: ErrorHandler, error: dict[str, object]
) -> None:
    user = await make_user(pool, telegram_id=42)
    failed = FailedSend(42, text="Your request #7 is open.", recipient_id=user["id"],
                        idempotency_key="resend:100000001:42")  # fmt: skip
    first = await handler.handle(telegram_error(**error), failed_send=failed)  # type: ignore[arg-type]
    again = await handler.handle(telegram_error(**error), failed_send=failed)  # type: ignore[arg-type]
    assert first.category is ErrorCategory.TRANSIENT
    assert "queued_resend" in first.actions and "queued_resend" in again.actions
    rows = await pool.fetch("SELECT * FROM pending_notifications")
    assert len(rows) == 1
    assert rows[0]["template_key"] == RESEND_TEMPLATE
    assert rows[0]["params"] == {"text": "Your request #7 is open."}
    assert rows[0]["chat_id"] == 42 and rows[0]["recipient_id"] == user["id"]
    assert await pool.fetchval("SELECT blocked_bot_at FROM users WHERE id = $1", user["id"]) is None


async def test_data_and_business_errors_are_only_recorded(
    pool: asyncpg.Pool, handler: ErrorHandler
) -> None:
    await make_user(pool, telegram_id=42)
    for exc in (InputValidationError("description", "too long"), concurrent(1, 1)):
        record = await handler.handle(
            exc, failed_send=FailedSend(42, text="x", idempotency_key="k")
        )
        assert record.actions == ["recorded"]
    assert await pool.fetchval("SELECT count(*) FROM pending_notifications") == 0
    assert await pool.fetchval("SELECT count(*) FROM users WHERE blocked_bot_at IS NOT NULL") == 0


async def test_recording_never_raises_when_the_database_is_gone(database_url: str) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    handler = ErrorHandler(pool, store_timeout_s=1)
    await pool.close()
    record = await handler.handle(concurrent(1, 1))
    # the reference is known before any write; the occurrence is held, not lost
    assert record.reference == group_reference(record.fingerprint)
    assert record.category is ErrorCategory.BUSINESS_LOGIC
    assert not await handler.flush()
    assert handler.pipeline.held_occurrences == 1
    again = await handler.handle(concurrent(2, 1))
    assert again.actions == ["spooled"]
    assert again.reference == record.reference
    assert handler.pipeline.held_occurrences == 2


async def test_a_group_stored_under_another_reference_is_found_by_the_one_shown(
    pool: asyncpg.Pool, handler: ErrorHandler
) -> None:
    # a group written before (by an older version) under a reference of its own
    probe = await handler.handle(concurrent(1, 1))
    await pool.execute(
        "INSERT INTO error_records (reference, fingerprint, category, severity, error_type, "
        "message, occurrence_count) VALUES ('E-OLDREF', $1, 'business_logic', 'low', "
        "'x.ConcurrentModificationError', 'old', 5)",
        probe.fingerprint,
    )
    assert await handler.flush()
    shown = probe.reference
    assert shown == group_reference(probe.fingerprint)
    for reference in (shown, "E-OLDREF"):
        group = await ErrorStatistics(pool).lookup(reference or "")
        assert group is not None, reference
        assert group["reference"] == "E-OLDREF"
        assert group["occurrence_count"] == 6
    # later occurrences show the stored reference
    later = await handler.handle(concurrent(2, 1))
    assert later.reference == "E-OLDREF"


async def test_a_new_group_whose_reference_is_taken_is_stored_all_the_same(
    pool: asyncpg.Pool, handler: ErrorHandler
) -> None:
    record = await handler.handle(concurrent(1, 1))
    # another group holds the reference this one derives (30 bits: rare, not impossible)
    await pool.execute(
        "INSERT INTO error_records (reference, fingerprint, category, severity, error_type, "
        "message) VALUES ($1, 'another', 'data', 'low', 'x.Other', 'other')",
        record.reference,
    )
    assert await handler.flush()
    row = await pool.fetchrow(
        "SELECT * FROM error_records WHERE fingerprint = $1", record.fingerprint
    )
    assert row is not None and row["occurrence_count"] == 1
    assert row["reference"] == f"X-{record.fingerprint}"
    assert (await handler.handle(concurrent(2, 1))).reference == row["reference"]


def test_normalized_messages_drop_ids_numbers_and_quoted_values() -> None:
    assert normalize_message('column "col_17" does not exist') == normalize_message(
        'column "col_993" does not exist'
    )
    assert (
        normalize_message("request 17 was modified concurrently (expected version 3)")
        == "request <n> was modified concurrently (expected version <n>)"
    )
    assert normalize_message("tx 3f2c7a9e-1b2c-4d5e-8f90-123456789abc at 0xdeadbeef") == (
        "tx <uuid> at <hex>"
    )


async def test_a_failing_strategy_step_keeps_the_record(
    pool: asyncpg.Pool, handler: ErrorHandler
) -> None:
    # the outbox is what is broken: the alert cannot be written, the error is still recorded
    await pool.execute("ALTER TABLE pending_notifications RENAME TO pending_notifications_gone")
    record = await handler.handle(await missing_column(pool, 1))
    assert record.actions == ["recorded", "alerted_failed"]
    row = await pool.fetchrow("SELECT * FROM error_records WHERE reference = $1", record.reference)
    assert row is not None
    assert row["last_alerted_at"] is None  # the claim was rolled back with the step
    # once the outbox is back, the next occurrence alerts
    await pool.execute("ALTER TABLE pending_notifications_gone RENAME TO pending_notifications")
    again = await handler.handle(await missing_column(pool, 2))
    assert again.actions == ["recorded", "alerted"]
