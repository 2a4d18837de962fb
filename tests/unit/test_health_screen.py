"""The health screen names the background tasks that are down, waiting for a restart."""

from __future__ import annotations

from bot.i18n import create_i18n
from handlers.admin.health import render_health
from recovery.health import HealthOverview, HealthThresholds, evaluate


def _render(overview: HealthOverview, locale: str) -> str:
    i18n = create_i18n("en")
    with i18n.context(), i18n.use_locale(locale):
        return str(render_health(overview))


def test_the_health_screen_lists_the_tasks_that_are_down() -> None:
    report = evaluate({}, HealthThresholds())
    down = HealthOverview(report, None, None, ("notification_sender", "outage_watch"))
    text = _render(down, "en")
    assert "Background tasks down, restarting: notification_sender, outage_watch" in text
    assert "notification_sender" in _render(down, "ru")
    assert "Background tasks down" not in _render(HealthOverview(report, None, None), "en")
