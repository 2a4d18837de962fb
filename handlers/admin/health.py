"""System health screen: live figures and status, why, and the change since the previous
snapshot and over 24 h."""

from __future__ import annotations

import datetime as dt
import json
import zlib

from aiogram import F, Router
from aiogram.types import CallbackQuery
from aiogram.utils.callback_answer import CallbackAnswer
from aiogram.utils.i18n import gettext as _
from aiogram.utils.keyboard import InlineKeyboardBuilder

from handlers.callbacks import HealthRefreshCb, MenuCb
from handlers.labels import HEALTH_FIGURE_MSGIDS as FIGURE_LABELS
from handlers.labels import HEALTH_STATUS_MSGIDS as STATUS_LABELS
from handlers.render import Html, bold, html, italic, join, plain
from handlers.screens import edit_or_send
from handlers.texts import duration
from recovery.health import (
    HealthMonitor,
    HealthOverview,
    HealthStatus,
    Snapshot,
)

router = Router(name=__name__)

STATUS_MARKS = {
    HealthStatus.HEALTHY: "🟢",
    HealthStatus.DEGRADED: "🟡",
    HealthStatus.CRITICAL: "🔴",
}


def status_label(status: str) -> str:
    """The localized name of a health status."""
    return _(STATUS_LABELS[status]) if status in STATUS_LABELS else status


def figure_value(name: str, value: float) -> str:
    """A figure for display: pool use as a percentage, the rest as whole numbers."""
    if name == "pool_usage":
        return f"{value * 100:.0f}%"
    return f"{value:.0f}"


def figure_delta(name: str, delta: float | None) -> str:
    """A signed change ("+3", "−2", "0"); "–" when there is nothing to compare with."""
    if delta is None:
        return "–"
    if name == "pool_usage":
        delta *= 100
    if round(delta) == 0:
        return "0"
    return f"{delta:+.0f}".replace("-", "−") + ("%" if name == "pool_usage" else "")


def _age(snapshot: Snapshot, now: dt.datetime) -> str:
    return plain(_("{age} ago"), age=duration((now - snapshot.created_at).total_seconds()))


def comparison_lines(overview: HealthOverview, now: dt.datetime) -> list[Html]:
    """What the two comparison columns compare with, a sentence that reads right when a
    snapshot is missing (a fresh install has none)."""
    previous, baseline = overview.previous, overview.baseline
    lines = [
        html(_("Previous snapshot: {age}."), age=_age(previous, now))
        if previous is not None
        else html(_("No earlier snapshot yet: the first column starts with the next one."))
    ]
    if baseline is not None:
        lines.append(
            html(_("24 h comparison with the snapshot from {age}."), age=_age(baseline, now))
        )
    else:
        lines.append(html(_("No snapshot from 24 h ago yet: the 24 h column shows –.")))
    return lines


def render_health(overview: HealthOverview, now: dt.datetime | None = None) -> Html:
    """The health screen's text."""
    now = now or dt.datetime.now(dt.UTC)
    report = overview.report
    since_previous = HealthOverview.delta(report, overview.previous)
    over_day = HealthOverview.delta(report, overview.baseline)
    lines: list[str] = [
        html(
            "{mark} {title}",
            mark=STATUS_MARKS[report.status],
            title=bold(html(_("System health: {status}"), status=status_label(report.status))),
        )
    ]
    for reason in report.reasons:
        lines.append(
            html(
                "• " + _("{figure}: {value} (threshold {threshold}, {level})"),
                figure=_(FIGURE_LABELS[reason.figure]),
                value=figure_value(reason.figure, reason.value),
                threshold=figure_value(reason.figure, reason.threshold),
                level=status_label(reason.level),
            )
        )
    if overview.tasks_down:
        lines.append(
            html(
                "• " + _("Background tasks down, restarting: {names}"),
                names=", ".join(overview.tasks_down),
            )
        )
    lines += ["", italic(_("Figure: now (since the previous snapshot / over 24 h)"))]
    for name, msgid in FIGURE_LABELS.items():
        value = report.figures.get(name)
        if value is None:
            continue
        lines.append(
            html(
                "{figure}: {value} ({previous} / {day})",
                figure=_(msgid),
                value=bold(figure_value(name, value)),
                previous=figure_delta(name, since_previous.get(name)),
                day=figure_delta(name, over_day.get(name)),
            )
        )
    lines += ["", *comparison_lines(overview, now)]
    lines.append(html(_("Figures taken at {time} UTC."), time=f"{now:%Y-%m-%d %H:%M:%S}"))
    return join("\n", lines)


def fingerprint(overview: HealthOverview) -> int:
    """CRC-32 of what the screen reports now (status, reasons, figures, tasks down): equal
    fingerprints mean nothing changed between two looks."""
    report = overview.report
    seen = [
        str(report.status),
        [[r.figure, r.value, str(r.level)] for r in report.reasons],
        sorted(report.figures.items()),
        sorted(overview.tasks_down),
    ]
    return zlib.crc32(json.dumps(seen, default=str).encode())


def refresh_answer(before: HealthRefreshCb, fp: int, now: dt.datetime) -> str:
    """The short answer to Refresh: when the figures were updated, or since when they have
    not changed (UTC, the screen's time zone)."""
    if before.fp == fp and before.at:
        since = dt.datetime.fromtimestamp(before.at, dt.UTC)
        return plain(_("No change since {time} UTC."), time=f"{since:%H:%M:%S}")
    return plain(_("Updated at {time} UTC."), time=f"{now:%H:%M:%S}")


@router.callback_query(MenuCb.filter(F.section == "health"))
@router.callback_query(HealthRefreshCb.filter())
async def health(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    callback_data: MenuCb | HealthRefreshCb,
    health_monitor: HealthMonitor,
) -> None:
    """The live figures, the status with its reasons, and the changes; Refresh answers
    with when they were updated or since when they have not changed."""
    overview = await health_monitor.overview()
    now = dt.datetime.now(dt.UTC)
    fp = fingerprint(overview)
    shown = HealthRefreshCb(fp=fp, at=int(now.timestamp()))
    if isinstance(callback_data, HealthRefreshCb):
        callback_answer.text = refresh_answer(callback_data, fp, now)
        if callback_data.fp == fp and callback_data.at:
            shown = callback_data  # "no change since" keeps counting from the first look
    keyboard = InlineKeyboardBuilder()
    keyboard.button(text=_("Refresh"), callback_data=shown)
    keyboard.button(text=_("« Back"), callback_data=MenuCb(section="main"))
    keyboard.adjust(2)
    await edit_or_send(query, render_health(overview, now), keyboard.as_markup())
