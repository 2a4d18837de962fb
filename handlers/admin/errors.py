"""Error statistics screen: counts by category and severity (24 h, 7 days), the top error
groups, look-up of a reference a user quoted, resolving a group, and a per-hour chart sent
as a photo (text when Telegram refuses the photo)."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from aiogram import F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import BufferedInputFile, CallbackQuery, InlineKeyboardMarkup, Message
from aiogram.utils.callback_answer import CallbackAnswer
from aiogram.utils.i18n import gettext as _
from aiogram.utils.i18n import lazy_gettext as __
from aiogram.utils.keyboard import InlineKeyboardBuilder

from handlers.admin.charts import charts_available, render_errors_per_hour
from handlers.callbacks import ErrorGroupCb, ErrorResolveCb, ErrorsCb, MenuCb
from handlers.filters import TextAnswer
from handlers.render import Html, bold, cut, html, join, plain
from handlers.screens import Pager, alert, answer_now, edit_or_send, list_markup
from handlers.texts import ngettext
from recovery.actors import Actor
from recovery.audit import AdminAuditLog
from recovery.error_stats import CategoryCount, ErrorStatistics, HourlySeries
from recovery.errors import ErrorHandler

log = logging.getLogger(__name__)
router = Router(name=__name__)

PAGE_SIZE = 5
CHART_WINDOWS_H = (24, 7 * 24)
STATS_WINDOWS_H = (24, 7 * 24)

CATEGORY_LABELS = {
    "transient": __("transient"),
    "data": __("data"),
    "business_logic": __("business logic"),
    "system": __("system"),
    "inventory": __("inventory"),
    "notification": __("notification"),
}
SEVERITY_LABELS = {
    "low": __("low"),
    "medium": __("medium"),
    "high": __("high"),
    "critical": __("critical"),
}
GROUP_STATUS_LABELS = {"open": __("open"), "resolved": __("resolved"), "regressed": __("regressed")}


class ErrorLookup(StatesGroup):
    """Waiting for the admin to send an error reference."""

    reference = State()


def category_label(category: str) -> str:
    """The localized name of an error category."""
    return str(CATEGORY_LABELS.get(category, category))


def severity_label(severity: str) -> str:
    """The localized name of an error severity."""
    return str(SEVERITY_LABELS.get(severity, severity))


def window_label(hours: int) -> str:
    """``24 h`` or ``7 days``."""
    if hours % 24 == 0 and hours > 24:
        return plain(ngettext("{n} day", "{n} days", hours // 24), n=hours // 24)
    return plain(ngettext("{n} hour", "{n} hours", hours), n=hours)


def render_counts(hours: int, counts: list[CategoryCount]) -> list[Html]:
    """Lines of one window: totals, then each category and severity."""
    occurrences = sum(c.occurrences for c in counts)
    groups = sum(c.groups for c in counts)
    lines = [
        bold(
            html(
                _("Last {window}: {occurrences} in {groups}"),
                window=window_label(hours),
                occurrences=plain(
                    ngettext("{n} occurrence", "{n} occurrences", occurrences), n=occurrences
                ),
                groups=plain(ngettext("{n} group", "{n} groups", groups), n=groups),
            )
        )
    ]
    lines += [
        html(
            "• {category} / {severity}: {n} {groups}",
            category=category_label(c.category),
            severity=severity_label(c.severity),
            n=c.occurrences,
            groups=html(_("(groups: {n})"), n=c.groups),
        )
        for c in counts
    ]
    return lines


def render_group(row: asyncpg.Record) -> Html:
    """One error group's detail (stored text is already masked; every value escaped)."""
    lines = [
        html(
            "{title} · {status}",
            title=bold(html(_("Error {reference}"), reference=row["reference"])),
            status=str(GROUP_STATUS_LABELS.get(row["status"], row["status"])),
        ),
        html(
            _("Category: {category}, severity: {severity}"),
            category=category_label(row["category"]),
            severity=severity_label(row["severity"]),
        ),
        html(_("Type: {type}"), type=row["error_type"]),
        html(_("Where: {location}"), location=row["location"] or "-"),
        html(_("Technical message (as recorded): {message}"), message=cut(row["message"], 500)),
        html(_("Occurrences: {n}"), n=row["occurrence_count"]),
        html(
            _("First seen: {first}, last seen: {last} UTC"),
            first=f"{row['first_seen_at']:%Y-%m-%d %H:%M}",
            last=f"{row['last_seen_at']:%Y-%m-%d %H:%M}",
        ),
    ]
    if row["resolved_at"] is not None:
        lines.append(html(_("Resolved: {when} UTC"), when=f"{row['resolved_at']:%Y-%m-%d %H:%M}"))
    return join("\n", lines)


def group_markup(row: asyncpg.Record, page: int) -> InlineKeyboardMarkup:
    """Resolve (unless resolved) and back to the top-groups page."""
    keyboard = InlineKeyboardBuilder()
    if row["status"] != "resolved":
        keyboard.button(
            text=_("Mark resolved"), callback_data=ErrorResolveCb(record_id=row["id"], page=page)
        )
    keyboard.button(text=_("« Back"), callback_data=ErrorsCb(view="top", page=page))
    keyboard.adjust(1)
    return keyboard.as_markup()


def render_series_text(series: HourlySeries, hours: int) -> Html:
    """Text fallback of the chart: non-empty hours (days for windows over 48 h), newest
    last, each with its total and categories; at most 60 lines."""
    daily = hours > 48
    buckets: dict[str, dict[str, int]] = {}
    for i, hour in enumerate(series.hours):
        label = f"{hour:%d.%m}" if daily else f"{hour:%d.%m %H:00}"
        bucket = buckets.setdefault(label, {})
        for category, values in series.by_category.items():
            if values[i]:
                bucket[category] = bucket.get(category, 0) + values[i]
    lines: list[str] = [
        html(
            _("Errors per {unit} over the last {window} (UTC): {total}"),
            unit=_("day") if daily else _("hour"),
            window=window_label(hours),
            total=series.total,
        )
    ]
    rows = [
        html(
            "{label}: {total} ({categories})",
            label=label,
            total=sum(counts.values()),
            categories=", ".join(f"{category_label(c)} {n}" for c, n in sorted(counts.items())),
        )
        for label, counts in buckets.items()
        if counts
    ]
    lines += rows[-60:] or [_("none")]
    return join("\n", lines)


def stats_markup() -> InlineKeyboardMarkup:
    """The statistics screen's actions."""
    keyboard = InlineKeyboardBuilder()
    keyboard.button(text=_("Top error groups"), callback_data=ErrorsCb(view="top"))
    for hours in CHART_WINDOWS_H:
        keyboard.button(
            text=plain(_("Chart: {window}"), window=window_label(hours)),
            callback_data=ErrorsCb(view="chart", hours=hours),
        )
    keyboard.button(text=_("Look up a reference"), callback_data=ErrorsCb(view="lookup"))
    keyboard.button(text=_("« Back"), callback_data=MenuCb(section="main"))
    keyboard.adjust(1, 2, 1, 1)
    return keyboard.as_markup()


@router.callback_query(MenuCb.filter(F.section == "errors"))
@router.callback_query(ErrorsCb.filter(F.view == "stats"))
async def stats(query: CallbackQuery, error_stats: ErrorStatistics, state: FSMContext) -> None:
    """Counts by category and severity for 24 h and 7 days."""
    await state.clear()
    lines: list[str] = [_("Error statistics")]
    for hours in STATS_WINDOWS_H:
        lines += ["", *render_counts(hours, await error_stats.counts(hours))]
    await edit_or_send(query, join("\n", lines), stats_markup())


@router.callback_query(ErrorsCb.filter(F.view == "top"))
async def top_groups(
    query: CallbackQuery, callback_data: ErrorsCb, error_stats: ErrorStatistics
) -> None:
    """A page of unresolved groups, most frequent first."""
    result = await error_stats.top_groups(page=callback_data.page, page_size=PAGE_SIZE)
    pager = Pager.of(result.total, callback_data.page, PAGE_SIZE)
    buttons = [
        (
            f"{row['reference']} · {category_label(row['category'])}/"
            f"{severity_label(row['severity'])} · {row['occurrence_count']}×",
            ErrorGroupCb(record_id=row["id"], page=pager.page),
        )
        for row in result.items
    ]
    markup = list_markup(
        buttons,
        pager,
        lambda p: ErrorsCb(view="top", page=p),
        (_("« Back"), ErrorsCb(view="stats")),
    )
    if result.total:
        text: str = html(
            _("Unresolved error groups: {total}. Page {page} of {pages}."),
            total=f"{result.total}+" if result.capped else result.total,
            page=pager.page + 1,
            pages=f"{pager.pages}+" if result.capped else pager.pages,
        )
    else:
        text = _("No unresolved error groups.")
    await edit_or_send(query, text, markup)


@router.callback_query(ErrorGroupCb.filter())
async def group_detail(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    callback_data: ErrorGroupCb,
    error_stats: ErrorStatistics,
) -> None:
    """One group's detail."""
    row = await error_stats.group(callback_data.record_id)
    if row is None:
        alert(callback_answer, _("This error group does not exist (any more)."))
        return
    await edit_or_send(query, render_group(row), group_markup(row, callback_data.page))


@router.callback_query(ErrorResolveCb.filter())
async def resolve(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    callback_data: ErrorResolveCb,
    user: asyncpg.Record,
    error_stats: ErrorStatistics,
    error_handler: ErrorHandler,
    audit: AdminAuditLog,
) -> None:
    """Marks the group resolved (audited; a group that is gone is audited as refused); if
    it happens again it reopens as regressed."""
    row = await error_stats.group(callback_data.record_id)
    if row is None:
        await audit.record(
            Actor.of(user),
            "error.resolve",
            target_type="error",
            target_id=callback_data.record_id,
            success=False,
            error=f"not_found: error group {callback_data.record_id}",
        )
        alert(callback_answer, _("This error group does not exist (any more)."))
        return
    await audit.audited(
        Actor.of(user),
        "error.resolve",
        lambda: error_handler.resolve_group(row["reference"], resolved_by=Actor.of(user)),
        target_type="error",
        target_id=row["reference"],
        before={"status": row["status"], "occurrences": row["occurrence_count"]},
        after=lambda group: {"status": group.status if group else None},
        refused=lambda group: None if group else f"not_found: {row['reference']}",
    )
    updated = await error_stats.group(callback_data.record_id)
    if updated is None:  # removed by the cleanup meanwhile
        await edit_or_send(query, _("This error group does not exist (any more)."))
        return
    text = (
        render_group(updated)
        + "\n\n"
        + _("Resolved. If this error happens again, the group reopens as regressed.")
    )
    await edit_or_send(query, text, group_markup(updated, callback_data.page))


@router.callback_query(ErrorsCb.filter(F.view == "lookup"))
async def ask_reference(query: CallbackQuery, state: FSMContext) -> None:
    """Asks for the reference a user quoted."""
    await state.set_state(ErrorLookup.reference)
    keyboard = InlineKeyboardBuilder()
    keyboard.button(text=_("Cancel"), callback_data=ErrorsCb(view="stats"))
    await edit_or_send(
        query,
        _("Send the error reference the user quoted, for example E-7K3M9Q."),
        keyboard.as_markup(),
    )


@router.message(StateFilter(ErrorLookup.reference), TextAnswer())
async def lookup(message: Message, error_stats: ErrorStatistics, state: FSMContext) -> None:
    """Shows the group of the reference, or says there is none (and keeps waiting)."""
    reference = (message.text or "").strip()
    row = await error_stats.lookup(reference)
    if row is None:
        keyboard = InlineKeyboardBuilder()
        keyboard.button(text=_("Cancel"), callback_data=ErrorsCb(view="stats"))
        await message.answer(
            html(
                _("No error has the reference {reference}. Check it and send it again."),
                reference=cut(reference, 64),
            ),
            reply_markup=keyboard.as_markup(),
        )
        return
    await state.clear()
    await message.answer(render_group(row), reply_markup=group_markup(row, 0))


@router.callback_query(ErrorsCb.filter((F.view == "chart") & ~F.hours.in_(CHART_WINDOWS_H)))
async def no_chart(query: CallbackQuery, callback_answer: CallbackAnswer) -> None:
    """A chart window the menu does not offer."""
    alert(callback_answer, _("This chart is not available."))


@router.callback_query(ErrorsCb.filter((F.view == "chart") & F.hours.in_(CHART_WINDOWS_H)))
async def chart(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    callback_data: ErrorsCb,
    error_stats: ErrorStatistics,
) -> None:
    """Errors per hour by category as a PNG photo; as text when sending the photo fails or
    matplotlib (the ``charts`` extra) is not installed."""
    await answer_now(query, callback_answer)  # drawing takes a while
    hours = callback_data.hours
    series = await error_stats.hourly(hours)
    if not charts_available() and isinstance(query.message, Message):
        await query.message.answer(render_series_text(series, hours))
        return
    title = plain(_("Errors per hour over the last {window} (UTC)"), window=window_label(hours))
    png = await asyncio.to_thread(
        render_errors_per_hour,
        series,
        title=title,
        category_labels={c: category_label(c) for c in CATEGORY_LABELS},
        y_label=_("occurrences"),
    )
    message = query.message
    if not isinstance(message, Message):
        return
    try:
        await message.answer_photo(
            BufferedInputFile(png, filename=f"errors-{hours}h.png"),
            caption=html(_("{title}: {total}"), title=title, total=series.total),
        )
    except TelegramAPIError as exc:
        log.info("chart photo refused (%s); sending the figures as text", exc.message)
        await message.answer(render_series_text(series, hours))
