"""Outage tracking (from when to when, the counters' growth, the alert threshold) and the
outage alert's text in each language, with the plural forms of its numbers."""

from __future__ import annotations

import datetime as dt

import pytest

from bot.i18n import create_i18n
from bot.notification_texts import make_renderer
from recovery.outages import RESUME_MIN_INTERVAL_S, Outage, OutageTracker


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_runs_from_the_first_failure_to_the_next_success() -> None:
    clock, updates, spooled = Clock(), [5], [2]
    tracker = OutageTracker(
        "database", 10.0, clock=clock,
        counters={"updates": lambda: updates[0], "errors_spooled": lambda: spooled[0]},
    )  # fmt: skip
    assert tracker.success() is None  # nothing to end
    tracker.failure()
    started = clock.now
    for _ in range(14):
        clock.now += 1
        updates[0] += 2
        spooled[0] += 1
        tracker.failure()
    clock.now += 1
    outage = tracker.success()
    assert outage is not None and tracker.finished == [outage]
    assert outage.started_at == dt.datetime.fromtimestamp(started, dt.UTC)
    assert outage.duration_s == 15
    assert outage.failures == 15
    assert outage.counts == {"updates": 28, "errors_spooled": 14}
    assert not tracker.down
    assert tracker.success() is None  # one outage, one report


def test_an_outage_below_the_threshold_is_not_kept() -> None:
    clock = Clock()
    tracker = OutageTracker("telegram", 30.0, clock=clock)
    tracker.failure()
    assert tracker.down
    clock.now += 29
    assert tracker.success() is None
    assert tracker.finished == []


def test_leftovers_are_put_back_from_the_earliest_outage_not_yet_resumed() -> None:
    """An outage that ends in a short one (a send still in flight failing just after the
    return) keeps the first start: notifications that died early in it come back too."""
    clock = Clock()
    tracker = OutageTracker("telegram", 3.0, clock=clock)
    start = clock.now
    tracker.failure()
    clock.now += 10
    assert tracker.success() is not None
    clock.now += 0.1
    tracker.failure()  # the late answer of a send made during the outage
    assert tracker.unresumed_since == start
    clock.now += 0.5
    tracker.success()
    assert tracker.backs == 1  # the short one after it is no return of its own
    assert tracker.unresumed_since == start
    tracker.resumed(start)
    assert tracker.unresumed_since is None
    tracker.failure()
    late = clock.now
    tracker.resumed(tracker.unresumed_since)  # a watch that ran while down again
    assert tracker.unresumed_since == late  # this outage's leftovers: at its end
    tracker.success()
    tracker.resumed(late)
    assert tracker.unresumed_since is None
    clock.now += 60
    tracker.failure()
    assert tracker.unresumed_since == clock.now  # the next outage starts afresh


def _outage(updates: int, spooled: int, failures: int) -> Outage:
    start = dt.datetime(2026, 12, 2, 4, 0, 0, tzinfo=dt.UTC)
    return Outage(
        "database", start, start + dt.timedelta(seconds=21), failures,
        {"updates": updates, "errors_spooled": spooled},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("locale", "updates", "expected"),
    [
        ("en", 1, "1 update arrived meanwhile."),
        ("en", 5, "5 updates arrived meanwhile."),
        ("ru", 1, "За это время пришло 1 обновление."),
        ("ru", 3, "За это время пришло 3 обновления."),
        ("ru", 11, "За это время пришло 11 обновлений."),
        ("uz", 7, "Shu vaqt ichida 7 ta yangilanish keldi."),
    ],
)
def test_the_database_outage_alert_uses_plural_forms(
    locale: str, updates: int, expected: str
) -> None:
    render = make_renderer(create_i18n("en"))
    text = str(render("admin.outage_database", _outage(updates, 2, 20).alert_params(), locale))
    assert expected in text, text
    assert "2026-12-02 04:00:00" in text and "04:00:21" in text, text
    assert "{" not in text, text


def test_the_telegram_outage_alert_counts_failed_calls() -> None:
    render = make_renderer(create_i18n("en"))
    outage = _outage(0, 0, 1)
    params = {**outage.alert_params()}
    text = str(render("admin.outage_telegram", params, "en"))
    assert "1 Bot API call failed." in text and "0 updates were received meanwhile." in text, text
    assert "waited at Telegram and is handled now" in text, text  # polling took nothing
    ru = str(render("admin.outage_telegram", {**params, "updates": 5}, "ru"))
    assert "За это время получено 5 обновлений." in ru and "ждало в Telegram" in ru, ru


def test_returns_close_together_make_the_retries_due_once() -> None:
    """A Telegram that fails sends while answering long polls returns every few seconds:
    only the first return in RESUME_MIN_INTERVAL_S puts the held-back rows back, unless the
    outage that ended was that long itself; a process start does not count."""
    clock = Clock()
    tracker = OutageTracker("telegram", 5.0, clock=clock)
    tracker.resumed(None, after_outage=False)  # the start's put-back
    assert tracker.resume_due()
    tracker.resumed(None)
    for _ in range(3):  # ten-second flaps
        tracker.failure()
        clock.now += 10
        tracker.success()
        assert not tracker.resume_due()
    clock.now += RESUME_MIN_INTERVAL_S
    assert tracker.resume_due()
    tracker.resumed(tracker.unresumed_since)
    tracker.failure()
    clock.now += RESUME_MIN_INTERVAL_S  # a long outage right after: put back at once
    tracker.success()
    assert tracker.resume_due()
