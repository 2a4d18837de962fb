"""The health screen names the background tasks that are down, waiting for a restart;
its Refresh says when the figures were updated, or since when they have not changed."""

from __future__ import annotations

import datetime as dt

from bot.i18n import create_i18n
from handlers.admin.health import fingerprint, refresh_answer, render_health
from handlers.callbacks import HealthRefreshCb
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


def _answer(before: HealthRefreshCb, fp: int, locale: str) -> str:
    i18n = create_i18n("en")
    with i18n.context(), i18n.use_locale(locale):
        return refresh_answer(before, fp, dt.datetime(2026, 5, 1, 10, 20, 30, tzinfo=dt.UTC))


def test_refresh_answers_when_the_figures_changed_or_since_when_not() -> None:
    calm = HealthOverview(evaluate({"stuck_requests": 1}, HealthThresholds()), None, None)
    busy = HealthOverview(evaluate({"stuck_requests": 90}, HealthThresholds()), None, None)
    assert fingerprint(calm) == fingerprint(
        HealthOverview(evaluate({"stuck_requests": 1}, HealthThresholds()), None, None)
    )
    assert fingerprint(calm) != fingerprint(busy)
    first_look = int(dt.datetime(2026, 5, 1, 10, 15, 0, tzinfo=dt.UTC).timestamp())
    shown = HealthRefreshCb(fp=fingerprint(calm), at=first_look)
    assert _answer(shown, fingerprint(calm), "en") == "No change since 10:15:00 UTC."
    assert _answer(shown, fingerprint(busy), "en") == "Updated at 10:20:30 UTC."
    # in the admin's language
    assert _answer(shown, fingerprint(calm), "ru") == "Без изменений с 10:15:00 UTC."
    assert _answer(shown, fingerprint(busy), "uz") == "10:20:30 UTC da yangilandi."
    # Refresh of a screen from before this button carried a fingerprint: an update
    assert _answer(HealthRefreshCb(), fingerprint(calm), "en") == "Updated at 10:20:30 UTC."
