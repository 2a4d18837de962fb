"""Recovery history screen: the latest admin actions (dashboard and workflow recovery) with
who, what and when, paginated."""

from __future__ import annotations

import html

from aiogram import F, Router
from aiogram.types import CallbackQuery
from aiogram.utils.i18n import gettext as _
from aiogram.utils.i18n import lazy_gettext as __
from aiogram.utils.keyboard import InlineKeyboardBuilder

from handlers.callbacks import HistoryCb, MenuCb
from handlers.screens import edit_or_send
from recovery.alerts import KIND_LABELS, AlertKind
from recovery.audit import AdminAuditLog, HistoryEntry

router = Router(name=__name__)

PAGE_SIZE = 10
MAX_PAGE = 10_000

ACTION_LABELS = {
    "force_transition": __("forced transition"),
    "reset_state": __("reset to the previous state"),
    "complete": __("forced completion"),
    "reassign": __("reassigned"),
    "error.resolve": __("error group resolved"),
    "alert.mute": __("alerts muted"),
    "alert.unmute": __("alerts unmuted"),
    "inventory.check": __("inventory check"),
    "inventory.fix_one": __("discrepancy fixed"),
    "inventory.fix_all": __("all discrepancies fixed"),
    "inventory.accept": __("discrepancy accepted"),
    "notification.retry": __("notification retried"),
    "notification.retry_all": __("all failed notifications retried"),
    "notification.discard": __("notification discarded"),
}
TARGET_LABELS = {
    "request": __("request"),
    "error": __("error"),
    "discrepancy": __("discrepancy"),
    "notification": __("notification"),
}


def render_entry(entry: HistoryEntry) -> str:
    """One line: when, outcome, what, on what, who (HTML)."""
    outcome = "✓" if entry.success else "✗"
    action = str(ACTION_LABELS.get(entry.action, entry.action))
    target = ""
    if entry.target_type == "alert_kind" and entry.target_id in KIND_LABELS:
        target = ": " + _(KIND_LABELS[AlertKind(entry.target_id)])
    elif entry.target_type is not None:
        label = str(TARGET_LABELS.get(entry.target_type, entry.target_type))
        target = f": {label} {html.escape(entry.target_id or '')}".rstrip()
    who = entry.admin_name or str(entry.admin_telegram_id or "?")
    line = f"{entry.created_at:%Y-%m-%d %H:%M} {outcome} {action}{target} — {html.escape(who)}"
    if entry.reason:
        line += f" ({html.escape(entry.reason[:80])})"
    return line


@router.callback_query(MenuCb.filter(F.section == "history"))
@router.callback_query(HistoryCb.filter())
async def history(
    query: CallbackQuery, audit: AdminAuditLog, callback_data: HistoryCb | MenuCb
) -> None:
    """A page of admin actions, newest first."""
    requested = callback_data.page if isinstance(callback_data, HistoryCb) else 0
    requested = min(max(requested, 0), MAX_PAGE)
    result = await audit.history(limit=PAGE_SIZE, offset=requested * PAGE_SIZE)
    pages = max((result.total + PAGE_SIZE - 1) // PAGE_SIZE, 1)
    page = min(requested, pages - 1)
    if page != requested:
        result = await audit.history(limit=PAGE_SIZE, offset=page * PAGE_SIZE)
    lines = [
        _("Recovery history. Actions: {total}. Page {page} of {pages}.").format(
            total=result.total, page=page + 1, pages=pages
        )
    ]
    lines += [render_entry(entry) for entry in result.items] or [_("none")]
    keyboard = InlineKeyboardBuilder()
    navigation = 0
    if page > 0:
        keyboard.button(text="‹", callback_data=HistoryCb(page=page - 1))
        navigation += 1
    if page + 1 < pages:
        keyboard.button(text="›", callback_data=HistoryCb(page=page + 1))
        navigation += 1
    keyboard.button(text=_("« Back"), callback_data=MenuCb(section="main"))
    keyboard.adjust(*([navigation] if navigation else []), 1)
    await edit_or_send(query, "\n".join(lines), keyboard.as_markup())
