"""The health report says when this instance holds Telegram's limits alone (Redis
unreachable): degraded, never critical, and healthy again once the limits are shared."""

from __future__ import annotations

import asyncpg

from recovery.health import HealthMonitor, HealthStatus


async def test_rate_limits_held_alone_degrade_the_health(pool: asyncpg.Pool) -> None:
    status: dict[str, object] = {"backend": "redis", "shared": True}
    monitor = HealthMonitor(pool, rate_limits=lambda: status)
    assert (await monitor.report()).status is HealthStatus.HEALTHY

    status = {"backend": "local", "shared": False, "fallback": True, "instances": 3}
    report = await monitor.report()
    assert report.status is HealthStatus.DEGRADED
    assert [(r.figure, r.value) for r in report.reasons] == [("rate_limits_local_only", 1)]

    # an instance without Redis at all holds its limits by design: nothing to report
    status = {"backend": "local", "shared": False}
    assert (await monitor.report()).status is HealthStatus.HEALTHY
