"""Health: status from thresholds, live figures on seeded data, snapshots, alerts only on a
change of status (one on worsening, one on recovery), deltas, job failures."""

from __future__ import annotations

import asyncpg
import pytest

from bot.settings import Settings
from recovery.actors import Actor
from recovery.alerts import AdminAlerts, AlertOutcome, AlertPolicy
from recovery.health import (
    DEFAULT_THRESHOLDS,
    HealthMonitor,
    HealthStatus,
    HealthThresholds,
    evaluate,
)
from recovery.inventory import InventoryReconciliationManager
from tests.factories import make_material, make_request, make_user

ADMIN = Actor(user_id=None, role="admin", telegram_id=1)  # runs the inventory checks
HEALTHY_FIGURES = {name: 0.0 for name in DEFAULT_THRESHOLDS}


def test_each_figure_moves_the_status_at_its_thresholds() -> None:
    thresholds = HealthThresholds()
    assert evaluate(HEALTHY_FIGURES, thresholds).status is HealthStatus.HEALTHY
    for name, (degraded, critical) in DEFAULT_THRESHOLDS.items():
        if degraded is not None:
            below = evaluate({**HEALTHY_FIGURES, name: degraded * 0.99}, thresholds)
            assert below.status is HealthStatus.HEALTHY, name
            at = evaluate({**HEALTHY_FIGURES, name: degraded}, thresholds)
            assert at.status is HealthStatus.DEGRADED, name
            assert [r.figure for r in at.reasons] == [name]
            assert at.reasons[0].threshold == degraded
        if critical is None:  # degraded at most (rate limits held locally: sends go on)
            worst = evaluate({**HEALTHY_FIGURES, name: 1e9}, thresholds)
            assert worst.status is HealthStatus.DEGRADED, name
            continue
        report = evaluate({**HEALTHY_FIGURES, name: critical}, thresholds)
        assert report.status is HealthStatus.CRITICAL, name
        assert report.reasons[0].level is HealthStatus.CRITICAL


def test_the_worst_figure_decides_and_reasons_list_worst_first() -> None:
    figures = {**HEALTHY_FIGURES, "stuck_requests": 3, "dead_notifications": 60}
    report = evaluate(figures, HealthThresholds())
    assert report.status is HealthStatus.CRITICAL
    assert [(r.figure, r.level) for r in report.reasons] == [
        ("dead_notifications", HealthStatus.CRITICAL),
        ("stuck_requests", HealthStatus.DEGRADED),
    ]


def test_thresholds_are_configurable_and_validated() -> None:
    settings = Settings(
        _env_file=None, health_thresholds='{"stuck_requests": [10, null], "pool_usage": [0.5, 0.6]}'
    )
    thresholds = HealthThresholds.with_overrides(settings.health_thresholds)
    assert thresholds.level_of("stuck_requests", 9) is HealthStatus.HEALTHY
    assert thresholds.level_of("stuck_requests", 10_000) is HealthStatus.DEGRADED
    assert thresholds.level_of("pool_usage", 0.6) is HealthStatus.CRITICAL
    assert thresholds.level_of("dead_notifications", 1) is HealthStatus.DEGRADED  # default kept
    with pytest.raises(ValueError, match="unknown health figure"):
        HealthThresholds.with_overrides({"coffee_level": [1, 2]})
    with pytest.raises(ValueError, match="critical_at is below degraded_at"):
        HealthThresholds.with_overrides({"stuck_requests": [10, 5]})
    with pytest.raises(ValueError, match="critical_at is below degraded_at"):
        Settings(_env_file=None, health_thresholds='{"stuck_requests": [10, 5]}')


async def _seed(pool: asyncpg.Pool) -> None:
    """2 active requests (one 30 h in 'new', one 2 h in 'review'), 1 completed; 3 dead and
    2 pending notifications; errors in the last hour: 2 critical, 1 high (and one older);
    one negative balance; one failed job run in the last hour (and one older)."""
    client = await make_user(pool)
    await make_request(pool, client_id=client["id"], hours_in_state=30)
    await make_request(pool, client_id=client["id"], state="review", hours_in_state=2)
    await make_request(pool, client_id=client["id"], status="completed", hours_in_state=99)
    for i, status in enumerate(["dead", "dead", "dead", "pending", "retrying", "sent"]):
        await pool.execute(
            "INSERT INTO pending_notifications (idempotency_key, chat_id, template_key, status) "
            "VALUES ($1, 1, 'admin.text', $2)",
            f"k{i}",
            status,
        )
    for i, (severity, minutes_ago) in enumerate(
        [("critical", 5), ("critical", 50), ("high", 10), ("high", 90)]
    ):
        await pool.execute(
            "INSERT INTO error_records (reference, fingerprint, category, severity, error_type, "
            "message, first_seen_at, last_seen_at) VALUES ($1, $2, 'system', $3, 'X', 'm', "
            "now() - make_interval(mins => $4), now() - make_interval(mins => $4))",
            f"E-SEED{i}",
            f"fp{i}",
            severity,
            minutes_ago,
        )
    await make_material(pool, sku="CABLE", balance=-4, ledger=-4)
    await InventoryReconciliationManager(pool).check_now(ADMIN)  # records it as open
    await pool.execute(  # job runs: one failed now, one failed 2 h ago, one ok now
        "INSERT INTO job_runs (job_name, slot_start, interval_s, instance_id, status, "
        "started_at) VALUES "
        "('cleanup', now(), 60, 'i', 'failed', now()), "
        "('cleanup', now() - interval '2 hours', 60, 'i', 'failed', now() - interval '2 hours'),"
        " ('health_snapshot', now(), 60, 'i', 'ok', now())"
    )


async def test_live_figures_on_seeded_data(pool: asyncpg.Pool) -> None:
    await _seed(pool)
    monitor = HealthMonitor(pool, stuck_thresholds={"connection:review": 3600})
    async with pool.acquire():  # one connection in use elsewhere in the process
        report = await monitor.report()
    figures = report.figures
    assert figures["active_requests"] == 2
    assert figures["stuck_requests"] == 2  # 30 h > 24 h default; 2 h > 1 h for review
    assert figures["dead_notifications"] == 3
    assert figures["pending_notifications"] == 1
    assert figures["retrying_notifications"] == 1
    assert figures["notification_backlog"] == 2
    assert figures["errors_critical_last_hour"] == 2
    assert figures["errors_high_last_hour"] == 1
    assert figures["errors_last_hour"] == 3
    assert figures["open_discrepancies"] == 1
    assert figures["job_failures_last_hour"] == 1
    assert figures["pool_usage"] == pytest.approx(1 / pool.get_max_size())
    assert report.status is HealthStatus.CRITICAL
    assert {r.figure for r in report.reasons} >= {
        "errors_critical_last_hour",
        "dead_notifications",
        "stuck_requests",
    }
    only_default = await HealthMonitor(pool).report()
    assert only_default.figures["stuck_requests"] == 1
    longer = await HealthMonitor(pool, stuck_thresholds={"connection:new": 48 * 3600}).report()
    assert longer.figures["stuck_requests"] == 0  # 30 h in 'new' is within its 48 h


async def _admin_alert_rows(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT * FROM pending_notifications WHERE template_key = 'admin.health_changed' "
        "ORDER BY id"
    )


async def test_one_alert_on_worsening_and_one_on_recovery(pool: asyncpg.Pool) -> None:
    admin = await make_user(pool, role="admin")
    alerts = AdminAlerts(pool, policy=AlertPolicy(dedupe_window_s=0))
    monitor = HealthMonitor(pool, alerts=alerts)

    first = await monitor.take_snapshot()
    assert first.report.status is HealthStatus.HEALTHY
    assert first.alert is None
    assert await _admin_alert_rows(pool) == []

    client = await make_user(pool)
    for _ in range(60):  # 60 >= 50 stuck: critical
        await make_request(pool, client_id=client["id"], hours_in_state=30)
    worse = await monitor.take_snapshot()
    assert (worse.previous_status, worse.report.status) == (
        HealthStatus.HEALTHY,
        HealthStatus.CRITICAL,
    )
    assert worse.alert is not None and worse.alert.outcome is AlertOutcome.SENT
    rows = await _admin_alert_rows(pool)
    assert len(rows) == 1
    assert rows[0]["chat_id"] == admin["telegram_id"]
    assert rows[0]["params"]["previous"] == "healthy"
    assert rows[0]["params"]["status"] == "critical"
    assert rows[0]["params"]["stuck"] == 60

    for _ in range(3):  # still critical: no new alert
        again = await monitor.take_snapshot()
        assert again.alert is None
    assert len(await _admin_alert_rows(pool)) == 1

    await pool.execute("UPDATE service_requests SET status = 'completed'")
    recovered = await monitor.take_snapshot()
    assert (recovered.previous_status, recovered.report.status) == (
        HealthStatus.CRITICAL,
        HealthStatus.HEALTHY,
    )
    assert recovered.alert is not None and recovered.alert.outcome is AlertOutcome.SENT
    rows = await _admin_alert_rows(pool)
    assert [(r["params"]["previous"], r["params"]["status"]) for r in rows] == [
        ("healthy", "critical"),
        ("critical", "healthy"),
    ]
    assert await pool.fetchval("SELECT count(*) FROM system_health_snapshots") == 6
    assert await pool.fetchval("SELECT count(*) FROM admin_alerts WHERE kind = 'health'") == 2


async def test_the_first_snapshot_alerts_when_it_is_not_healthy(pool: asyncpg.Pool) -> None:
    await make_user(pool, role="admin")
    await make_material(pool, sku="NEG", balance=-1, ledger=-1)
    await InventoryReconciliationManager(pool).check_now(ADMIN)
    monitor = HealthMonitor(pool, alerts=AdminAlerts(pool))
    result = await monitor.take_snapshot()
    assert result.report.status is HealthStatus.DEGRADED
    assert result.alert is not None
    assert len(await _admin_alert_rows(pool)) == 1


async def test_overview_compares_with_the_previous_and_the_24h_old_snapshot(
    pool: asyncpg.Pool,
) -> None:
    client = await make_user(pool)
    monitor = HealthMonitor(pool)
    await make_request(pool, client_id=client["id"])
    await monitor.take_snapshot()
    await pool.execute(
        "UPDATE system_health_snapshots SET created_at = now() - interval '25 hours'"
    )
    for _ in range(2):
        await make_request(pool, client_id=client["id"])
    await monitor.take_snapshot()
    await pool.execute(
        "UPDATE system_health_snapshots SET created_at = now() - interval '5 minutes' "
        "WHERE created_at > now() - interval '1 hour'"
    )
    for _ in range(4):
        await make_request(pool, client_id=client["id"])
    overview = await monitor.overview()
    assert overview.report.figures["active_requests"] == 7
    assert overview.previous is not None and overview.baseline is not None
    assert overview.previous.figures["active_requests"] == 3
    assert overview.baseline.figures["active_requests"] == 1
    assert overview.delta(overview.report, overview.previous)["active_requests"] == 4
    assert overview.delta(overview.report, overview.baseline)["active_requests"] == 6


async def test_overview_without_snapshots_has_nothing_to_compare(pool: asyncpg.Pool) -> None:
    overview = await HealthMonitor(pool).overview()
    assert overview.previous is None and overview.baseline is None
    assert overview.delta(overview.report, None) == {}
