"""Recovery history screen: the latest admin actions (dashboard and workflow recovery) with
who, what and when, paginated. A refused action reads as refused, with why."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.types import CallbackQuery
from aiogram.utils.i18n import gettext as _
from aiogram.utils.i18n import lazy_gettext as __

from handlers.callbacks import HistoryCb, MenuCb
from handlers.labels import KIND_LABELS
from handlers.render import Html, html, join
from handlers.screens import edit_or_send, fetch_page, list_markup
from handlers.texts import state_label
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


REFUSED_LABELS = {
    "force_transition": __("forced transition refused"),
    "reset_state": __("reset refused"),
    "complete": __("forced completion refused"),
    "reassign": __("reassignment refused"),
    "error.resolve": __("resolving an error group refused"),
    "alert.mute": __("muting alerts refused"),
    "alert.unmute": __("unmuting alerts refused"),
    "inventory.check": __("inventory check refused"),
    "inventory.fix_one": __("discrepancy fix refused"),
    "inventory.fix_all": __("fixing all discrepancies refused"),
    "inventory.accept": __("discrepancy acceptance refused"),
    "notification.retry": __("notification retry refused"),
    "notification.retry_all": __("retrying all notifications refused"),
    "notification.discard": __("notification discard refused"),
}
# why, by the code before the first ":" of the stored error (recovery.audit,
# recovery.workflows.refusal_code)
WHY_LABELS = {
    "stale": __("it changed meanwhile"),
    "materials_changed": __("the materials changed"),
    "not_found": __("it does not exist"),
    "not_active": __("no longer active"),
    "terminal": __("at the end of its workflow"),
    "no_history": __("no earlier state"),
    "already_assigned": __("already assigned"),
    "assignee_unavailable": __("assignee unavailable"),
    "not_retryable": __("it was sent, discarded or is being sent"),
    "not_discardable": __("it was sent or is being sent"),
    "error": __("database error"),
    "unavailable": __("the database was unreachable; nothing was changed"),
    "in_doubt": __("the outcome could not be confirmed; check the request"),
    "refused": __("not possible now"),
}


def why_label(error: str | None) -> str:
    """The localized reason of a refusal from its stored ``<code>: <detail>``."""
    code = (error or "").split(":", 1)[0].strip()
    return str(WHY_LABELS.get(code, WHY_LABELS["refused"]))  # never a raw code


def render_entry(entry: HistoryEntry) -> Html:
    """One line: when, outcome, what (refused, and why), on what, who, the state change and
    whether it was part of a batch (when known), the reason given."""
    if entry.success:
        outcome, action = "✓", str(ACTION_LABELS.get(entry.action, entry.action))
    else:
        outcome = "✗"
        action = str(REFUSED_LABELS.get(entry.action, entry.action))
    target: str | Html = ""
    if entry.target_type == "alert_kind" and entry.target_id in KIND_LABELS:
        target = html(": {kind}", kind=_(KIND_LABELS[entry.target_id]))
    elif entry.target_type is not None:
        label = str(TARGET_LABELS.get(entry.target_type, entry.target_type))
        target = html(": {label} {id}", label=label, id=entry.target_id or "").rstrip()
    line = html(
        "{when} {outcome} {action}{target} — {who}",
        when=f"{entry.created_at:%Y-%m-%d %H:%M}",
        outcome=outcome,
        action=action,
        target=target,
        who=entry.admin_name or str(entry.admin_telegram_id or "?"),
    )
    if entry.change is not None:
        before, after = entry.change
        line += html(" ({before} → {after})", before=state_label(before), after=state_label(after))
    if entry.batch:
        line += html(" {batch}", batch=_("(batch)"))
    if not entry.success:
        line += html(" [{why}]", why=why_label(entry.error))
    if entry.reason:
        line += html(" ({reason})", reason=entry.reason[:80])
    return line


@router.callback_query(MenuCb.filter(F.section == "history"))
@router.callback_query(HistoryCb.filter())
async def history(
    query: CallbackQuery, audit: AdminAuditLog, callback_data: HistoryCb | MenuCb
) -> None:
    """A page of admin actions, newest first."""
    requested = callback_data.page if isinstance(callback_data, HistoryCb) else 0
    result, pager = await fetch_page(
        lambda limit, offset: audit.history(limit=limit, offset=offset),
        lambda r: r.total,
        requested,
        PAGE_SIZE,
        MAX_PAGE,
    )
    lines: list[str] = [
        html(
            _("Recovery history. Actions: {total}. Page {page} of {pages}."),
            total=result.total,
            page=pager.page + 1,
            pages=pager.pages,
        )
    ]
    lines += [render_entry(entry) for entry in result.items] or [_("none")]
    markup = list_markup(
        [], pager, lambda p: HistoryCb(page=p), (_("« Back"), MenuCb(section="main"))
    )
    await edit_or_send(query, join("\n", lines), markup)
