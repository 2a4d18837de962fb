"""Dashboard read side and audit: error statistics on seeded data (hourly rollup kept by the
trigger), top groups, reference look-up, resolve and regress, the chart, the audit trail and
recovery history, failed job runs as a health figure, and the cleanup of dashboard data."""

from __future__ import annotations

import datetime as dt
import struct
import uuid

import asyncpg
import pytest
from aiogram import Bot

from bot.app import build_services
from bot.i18n import create_i18n
from bot.scheduler import run_job
from bot.settings import Settings
from database import error_records, recovery_log
from handlers.admin.alerts import offer_markup
from handlers.admin.charts import render_errors_per_hour
from recovery.actors import Actor
from recovery.alerts import AdminAlerts
from recovery.audit import AdminAuditLog
from recovery.error_stats import ErrorStatistics
from recovery.errors import ErrorHandler
from recovery.exceptions import NotFoundError
from tests.factories import make_user
from tests.fakes.telegram_api import DEFAULT_TOKEN


async def _write(
    pool: asyncpg.Pool, reference: str, category: str, severity: str, count: int, at: dt.datetime
) -> int:
    """``count`` occurrences of the group (fingerprint = ``reference``) at ``at``, through
    the error pipeline's batch write (counters and hourly rollup in one statement)."""
    hour = at.replace(minute=0, second=0, microsecond=0)
    stored = await error_records.record_batch(
        pool,
        [
            error_records.GroupOccurrences(
                fingerprint=reference, reference=reference, category=category,
                severity=severity, error_type="app.Boom", message="boom", location=None,
                stack_trace="app.Boom: boom", context_json=None, n=count, first_seen_at=at,
                last_seen_at=at, hours={hour: count},
            )
        ],
        writer=uuid.uuid4(),
        seq=1,
    )  # fmt: skip
    assert stored is not None
    return stored[0].id


async def _group(
    pool: asyncpg.Pool,
    reference: str,
    category: str,
    severity: str,
    *,
    count: int,
    hours_ago: float,
    status: str = "open",
) -> int:
    """A group whose ``count`` occurrences all happened ``hours_ago`` hours ago."""
    at = dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours_ago)
    record_id = await _write(pool, reference, category, severity, count, at)
    if status != "open":
        await pool.execute("UPDATE error_records SET status = $2 WHERE id = $1", record_id, status)
    return record_id


async def _occur(pool: asyncpg.Pool, fingerprint: str, times: int) -> None:
    """``times`` more occurrences of an existing group now, through the real batch write."""
    await _write(pool, fingerprint, "system", "critical", times, dt.datetime.now(dt.UTC))


async def test_statistics_by_category_and_severity_for_24h_and_7_days(pool: asyncpg.Pool) -> None:
    await _group(pool, "E-AAAAA1", "system", "critical", count=5, hours_ago=2)
    await _group(pool, "E-AAAAA2", "data", "medium", count=3, hours_ago=30)  # 7 d only
    await _group(pool, "E-AAAAA3", "data", "medium", count=2, hours_ago=1)
    await _group(pool, "E-AAAAA4", "transient", "high", count=9, hours_ago=24 * 9)  # neither
    await _occur(pool, "E-AAAAA1", 4)  # 4 more now, same group
    stats = ErrorStatistics(pool)

    day = {(c.category, c.severity): (c.groups, c.occurrences) for c in await stats.counts(24)}
    assert day == {("system", "critical"): (1, 9), ("data", "medium"): (1, 2)}
    week = {(c.category, c.severity): (c.groups, c.occurrences) for c in await stats.counts(168)}
    assert week == {("system", "critical"): (1, 9), ("data", "medium"): (2, 5)}
    assert [c.category for c in await stats.counts(168)] == ["system", "data"]  # most first

    series = await stats.hourly(24)
    assert len(series.hours) == 25
    assert all(type(v) is int for values in series.by_category.values() for v in values)
    assert series.total == 11
    assert series.by_category["system"][-1] == 4  # this hour
    assert series.by_category["system"][-3] == 5  # two hours ago
    assert sum(series.by_category["data"]) == 2
    with pytest.raises(ValueError):
        await stats.counts(0)
    with pytest.raises(ValueError):
        await stats.hourly(24 * 365)


async def test_top_groups_leave_out_resolved_ones_and_clamp_the_page(pool: asyncpg.Pool) -> None:
    for i, count in enumerate([5, 50, 7, 1]):
        await _group(pool, f"E-TOP00{i}", "system", "high", count=count, hours_ago=1)
    await _group(pool, "E-DONE01", "system", "high", count=999, hours_ago=1, status="resolved")
    stats = ErrorStatistics(pool)
    first = await stats.top_groups(page=0, page_size=3)
    assert first.total == 4
    assert [r["occurrence_count"] for r in first.items] == [50, 7, 5]
    last = await stats.top_groups(page=99, page_size=3)
    assert [r["reference"] for r in last.items] == ["E-TOP003"]
    negative = await stats.top_groups(page=-5, page_size=3)
    assert [r["occurrence_count"] for r in negative.items] == [50, 7, 5]
    assert not first.capped


async def test_a_large_number_of_groups_is_counted_up_to_the_cap(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(4):
        await _group(pool, f"E-CAP00{i}", "data", "low", count=i + 1, hours_ago=1)
    monkeypatch.setattr("recovery.error_stats.COUNT_CAP", 3)
    page = await ErrorStatistics(pool).top_groups(page=5, page_size=2)
    assert (page.total, page.capped) == (3, True)
    assert [r["occurrence_count"] for r in page.items] == [2, 1]  # clamped to page 2 of 2


async def test_look_up_an_error_reference_a_user_quoted(pool: asyncpg.Pool) -> None:
    record_id = await _group(pool, "E-7K3M9Q", "system", "critical", count=3, hours_ago=1)
    stats = ErrorStatistics(pool)
    for quoted in ("E-7K3M9Q", "e-7k3m9q", "  E-7K3M9Q \n"):
        row = await stats.lookup(quoted)
        assert row is not None and row["id"] == record_id
    assert await stats.lookup("E-ZZZZZZ") is None
    assert await stats.lookup("") is None
    assert await stats.lookup("E-" + "X" * 500) is None
    assert (await stats.group(record_id))["reference"] == "E-7K3M9Q"  # type: ignore[index]
    assert await stats.group(987654) is None
    assert await stats.group(-1) is None
    assert await stats.group(2**70) is None


def test_the_chart_is_a_png_of_the_agreed_size() -> None:
    from recovery.error_stats import HourlySeries

    hours = [dt.datetime(2026, 11, 30, h, tzinfo=dt.UTC) for h in range(24)]
    series = HourlySeries(hours, {"system": list(range(24)), "data": [1] * 24})
    png = render_errors_per_hour(
        series, title="Ошибки", category_labels={"system": "система"}, y_label="n"
    )
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert struct.unpack(">II", png[16:24]) == (1000, 500)
    empty = render_errors_per_hour(
        HourlySeries(hours, {}), title="none", category_labels={}, y_label="n"
    )
    assert empty.startswith(b"\x89PNG")


async def test_audited_actions_and_the_history_of_both_logs(pool: asyncpg.Pool) -> None:
    admin_row = await make_user(pool, role="admin", name="Ada Admin")
    admin = Actor.of(admin_row)
    audit = AdminAuditLog(pool)

    async def succeed() -> dict[str, int]:
        return {"value": 2}

    result = await audit.audited(
        admin,
        "alert.mute",
        succeed,
        target_type="alert_kind",
        target_id="error",
        before={"value": 1},
        after=lambda r: r,
    )
    assert result == {"value": 2}

    async def refuse() -> None:
        raise NotFoundError("notification", 42)

    with pytest.raises(NotFoundError):
        await audit.audited(
            admin,
            "notification.retry",
            refuse,
            target_type="notification",
            target_id=42,
            reason="call +998 90 123 45 67",
        )
    rows = await pool.fetch("SELECT * FROM admin_audit_log ORDER BY id")
    assert [(r["action"], r["success"]) for r in rows] == [
        ("alert.mute", True),
        ("notification.retry", False),
    ]
    assert (rows[0]["before_value"], rows[0]["after_value"]) == ({"value": 1}, {"value": 2})
    assert rows[0]["admin_telegram_id"] == admin.telegram_id
    assert "NotFoundError" in rows[1]["error_message"]
    assert "123 45 67" not in rows[1]["reason"]  # masked

    await recovery_log.insert(
        pool,
        request_id=None,
        action="force_transition",
        admin_id=admin.user_id,
        admin_telegram_id=admin.telegram_id,
        reason=None,
        before=None,
        after=None,
        success=True,
    )
    page = await audit.history(limit=2, offset=0)
    assert page.total == 3
    assert [e.action for e in page.items] == ["force_transition", "notification.retry"]
    assert page.items[0].source == "workflow"
    assert page.items[0].admin_name == "Ada Admin"
    rest = await audit.history(limit=2, offset=2)
    assert [e.action for e in rest.items] == ["alert.mute"]


async def test_a_failing_job_is_recorded_as_a_health_figure(
    pool: asyncpg.Pool, database_url: str
) -> None:
    settings = Settings(_env_file=None, bot_token=DEFAULT_TOKEN, database_url=database_url)
    bot = Bot(DEFAULT_TOKEN)
    try:
        services = build_services(settings, pool, create_i18n(), bot)

        async def broken(_services: object) -> object:
            raise RuntimeError("disk on fire")

        assert await run_job(services, "cleanup", broken) is None
        row = await pool.fetchrow("SELECT * FROM job_runs")
        assert (row["job_name"], row["status"]) == ("cleanup", "failed")
        assert "RuntimeError" in row["error"]
        report = await services.health_monitor.report()
        assert report.figures["job_failures_last_hour"] == 1
        assert report.status.value == "degraded"
    finally:
        await bot.session.close()


async def test_cleanup_removes_old_dashboard_rows_only(pool: asyncpg.Pool) -> None:
    record_id = await _group(pool, "E-OLD001", "system", "low", count=1, hours_ago=24 * 40)
    await _group(pool, "E-NEW001", "system", "low", count=1, hours_ago=1)
    await pool.execute(
        "INSERT INTO admin_alert_mutes (chat_id, kind, muted_until) VALUES "
        "(1, 'error', now() - interval '1 minute'), (1, 'health', now() + interval '1 hour')"
    )
    removed = await pool.fetchval("SELECT cleanup_old_dashboard_data(30)")
    assert removed == 2
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM error_hourly_counts WHERE record_id = $1", record_id
        )
        == 0
    )
    assert await pool.fetchval("SELECT count(*) FROM error_hourly_counts") == 1
    assert await pool.fetchval("SELECT kind FROM admin_alert_mutes") == "health"


def _undefined_table() -> asyncpg.PostgresError:
    """A critical error (SQLSTATE 42P01) raised from one place, with its traceback."""
    try:
        raise asyncpg.UndefinedTableError('relation "materials_v2" does not exist')
    except asyncpg.PostgresError as exc:
        return exc


async def test_resolve_and_regress_with_alerts_through_the_alert_path(pool: asyncpg.Pool) -> None:
    admin = await make_user(pool, role="admin")
    alerts = AdminAlerts(pool)
    handler = ErrorHandler(pool, alerts=alerts)
    stats = ErrorStatistics(pool)

    first = await handler.handle(_undefined_table())
    assert first.reference is not None and first.alerted
    alert_rows = await pool.fetch("SELECT * FROM admin_alerts ORDER BY id")
    assert [(r["kind"], r["status"]) for r in alert_rows] == [("error", "sent")]
    outbox = await pool.fetch("SELECT * FROM pending_notifications")
    assert [(r["chat_id"], r["template_key"]) for r in outbox] == [
        (admin["telegram_id"], "admin.error_alert")
    ]
    assert outbox[0]["params"]["reference"] == first.reference
    markup = offer_markup(outbox[0]["params"]["mute"], lambda msgid: msgid)
    assert markup is not None and markup.inline_keyboard[0][0].text == "Mute for 1 hour"

    resolved = await handler.resolve_group(first.reference, resolved_by=Actor.of(admin))
    assert resolved is not None and resolved.status == "resolved"
    assert (await stats.top_groups(page=0, page_size=5)).total == 0
    looked_up = await stats.lookup(first.reference.lower())
    assert looked_up is not None and looked_up["status"] == "resolved"

    again = await handler.handle(_undefined_table())
    assert again.reference == first.reference
    row = await stats.lookup(first.reference)
    assert row is not None
    assert (row["status"], row["occurrence_count"]) == ("regressed", 2)
    top = await stats.top_groups(page=0, page_size=5)
    assert [r["reference"] for r in top.items] == [first.reference]
    assert await pool.fetchval("SELECT count(*) FROM admin_alerts WHERE kind = 'error'") == 2
    day = {(c.category, c.severity): c.occurrences for c in await stats.counts(24)}
    assert day == {("system", "critical"): 2}
