"""Screens of the stuck-workflow section: text and inline keyboard for each, in the admin's
language (gettext at render time). No database access and no decisions here: the handlers
in ``stuck_workflows.py`` fetch, the core decides, these functions only render."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup
from aiogram.utils.i18n import gettext as _
from aiogram.utils.i18n import lazy_gettext as __
from aiogram.utils.keyboard import InlineKeyboardBuilder

from database.compensation import Outstanding
from handlers.admin.history import render_entry
from handlers.callbacks import (
    ActionCode,
    HistoryCb,
    MenuCb,
    StuckActionCb,
    StuckAssigneesCb,
    StuckBatchCb,
    StuckDetailCb,
    StuckFilterCb,
    StuckHistoryCb,
    StuckListCb,
)
from handlers.render import html, join
from handlers.screens import Pager
from handlers.texts import (
    duration,
    kind_label,
    role_label,
    state_label,
    status_label,
    workflow_label,
)
from recovery import workflow_definitions as wf
from recovery.audit import HistoryEntry
from recovery.workflows import RecoveryAction, RequestDetail, StuckPage, StuckRequest

Screen = tuple[str, InlineKeyboardMarkup]

PAGE_SIZE = 5
FAILURES_SHOWN = 10
IDS_SHOWN = 30  # request numbers listed per outcome of a batch; the rest are counted
MATERIALS_SHOWN = 20

ACTION_OF: dict[ActionCode, RecoveryAction] = {
    ActionCode.FORCE: RecoveryAction.FORCE,
    ActionCode.RESET: RecoveryAction.RESET,
    ActionCode.COMPLETE: RecoveryAction.COMPLETE,
    ActionCode.REASSIGN: RecoveryAction.REASSIGN,
}
CODE_OF: dict[RecoveryAction, ActionCode] = {v: k for k, v in ACTION_OF.items()}

BUTTON_LABELS = {
    RecoveryAction.FORCE: __("Force transition"),
    RecoveryAction.RESET: __("Reset to previous state"),
    RecoveryAction.COMPLETE: __("Force completion"),
    RecoveryAction.REASSIGN: __("Reassign"),
}
ACTION_NAMES = {
    RecoveryAction.FORCE: __("force transition"),
    RecoveryAction.RESET: __("reset"),
    RecoveryAction.COMPLETE: __("completion"),
    RecoveryAction.REASSIGN: __("reassignment"),
}
REASON_LABELS = {
    "over_deadline": __("over the deadline"),
    "assignee_inactive": __("assignee inactive"),
    "assignee_blocked": __("assignee blocked the bot"),
}
REFUSALS = {
    "stale": __(
        "Refused: request #{id} changed since you opened it (someone else acted first, or "
        "the button was pressed twice). Nothing was changed."
    ),
    "materials_changed": __(
        "Refused: the materials of request #{id} changed since the confirmation screen. "
        "Nothing was changed; open it again."
    ),
    "not_found": __("Refused: request #{id} does not exist."),
    "not_active": __("Refused: request #{id} is no longer active. Nothing was changed."),
    "terminal": __("Refused: request #{id} is already at the end of its workflow."),
    "no_history": __(
        "Refused: request #{id} has no earlier state in its history to go back to. "
        "Nothing was changed."
    ),
    "already_assigned": __("Refused: request #{id} is already assigned to that user."),
    "assignee_unavailable": __(
        "Refused: that user can no longer take request #{id} (inactive, unreachable or "
        "another role). Nothing was changed."
    ),
    "refused": __(
        "Refused: this action is not possible for request #{id} now. Nothing was changed."
    ),
    "error": __("Failed: a database error on request #{id}. Nothing was changed."),
}
SHORT_REFUSALS = {
    "stale": __("moved meanwhile"),
    "not_found": __("does not exist"),
    "not_active": __("no longer active"),
    "terminal": __("at the end of its workflow"),
    "no_history": __("no earlier state"),
    "already_assigned": __("already assigned"),
    "assignee_unavailable": __("assignee unavailable"),
    "materials_changed": __("materials changed"),
    "unavailable": __("database unavailable, nothing changed"),
    "in_doubt": __("outcome unknown, applied at most once"),
    "error": __("unexpected error, nothing changed"),
}


def _pages(total: int) -> int:
    return Pager.of(total, 0, PAGE_SIZE).pages


def _keyboard(rows: Sequence[Sequence[tuple[str, CallbackData]]]) -> InlineKeyboardMarkup:
    keyboard = InlineKeyboardBuilder()
    for row in rows:
        if row:
            keyboard.row(*[_button(text, data) for text, data in row])
    return keyboard.as_markup()


def _button(text: str, data: CallbackData) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=text, callback_data=data.pack())


def _nav(page: int, total: int, make: Any) -> list[tuple[str, CallbackData]]:
    pager = Pager(page=page, pages=_pages(total), size=PAGE_SIZE)
    return [(text, make(target)) for text, target in pager.neighbours()]


def filter_text(workflow_type: str | None, state: str | None) -> str:
    """``connection / review``, ``connection``, or "all" when there is no filter."""
    if workflow_type is None and state is None:
        return _("all")
    parts = [workflow_label(workflow_type)] if workflow_type else []
    if state:
        parts.append(state_label(state))
    return " / ".join(parts)


def _materials(items: Sequence[Outstanding]) -> list[str]:
    totals: dict[int, list[Any]] = {}
    for item in items:
        entry = totals.setdefault(item.material_id, [item.name, item.sku, item.unit, 0])
        entry[3] += item.quantity
    lines = [
        f"• {name} ({sku}): {quantity} {unit}" for name, sku, unit, quantity in totals.values()
    ]
    if len(lines) > MATERIALS_SHOWN:  # keep the message far below Telegram's 4096 characters
        lines = [*lines[:MATERIALS_SHOWN], f"… (+{len(lines) - MATERIALS_SHOWN})"]
    return lines


def _reasons(reasons: Sequence[str]) -> str:
    return ", ".join(str(REASON_LABELS.get(r, r)) for r in reasons)


# --- list, filter, detail ---------------------------------------------------------------


def list_screen(
    result: StuckPage, page: int, workflow_type: str | None, state: str | None
) -> Screen:
    """A page of stuck requests: one line and one button per request."""
    lines: list[str] = []
    if result.total:
        lines.append(
            html(
                _("Stuck workflows: {total}. Page {page} of {pages}."),
                total=result.total,
                page=page + 1,
                pages=_pages(result.total),
            )
        )
    else:
        lines.append(_("No stuck workflows."))
    lines.append(html(_("Filter: {filter}"), filter=filter_text(workflow_type, state)))
    rows: list[list[tuple[str, CallbackData]]] = []
    for item in result.items:
        holder = item.assignee_name if item.assignee_name else role_label(item.role)
        deadline = duration(item.threshold_s) if item.threshold_s else "-"
        lines.append(
            f"#{item.request_id} {workflow_label(item.workflow_type)} · "
            f"{state_label(item.state)} · {duration(item.stuck_for_s)} / {deadline} · "
            f"{holder} · {_reasons(item.reasons)}"
        )
        rows.append(
            [
                (
                    f"#{item.request_id} {workflow_label(item.workflow_type)} · "
                    f"{state_label(item.state)} · {duration(item.stuck_for_s)}",
                    StuckDetailCb(
                        request_id=item.request_id, page=page, wf=workflow_type, st=state
                    ),
                )
            ]
        )
    rows.append(_nav(page, result.total, lambda p: StuckListCb(page=p, wf=workflow_type, st=state)))
    tools: list[tuple[str, CallbackData]] = [(_("Filter"), StuckFilterCb(wf=workflow_type))]
    if result.total:
        tools.append((_("Batch action"), StuckBatchCb(wf=workflow_type, st=state)))
    rows.append(tools)
    rows.append([(_("Recovery history"), HistoryCb())])
    rows.append([(_("« Back"), MenuCb(section="main"))])
    return join("\n", lines), _keyboard(rows)


def filter_screen(workflow_type: str | None) -> Screen:
    """Workflow types, and the states of the chosen one."""
    rows: list[list[tuple[str, CallbackData]]] = [[(_("All types"), StuckListCb())]]
    rows += [[(workflow_label(name), StuckFilterCb(wf=name))] for name in wf.WORKFLOWS]
    text = _("Filter stuck workflows by type and state:")
    if workflow_type is not None:
        rows.append([(_("All states"), StuckListCb(wf=workflow_type))])
        rows += [
            [(state_label(step.state), StuckListCb(wf=workflow_type, st=step.state))]
            for step in wf.workflow(workflow_type)
            if step.role is not None
        ]
        text += "\n" + html(_("Type: {workflow}"), workflow=workflow_label(workflow_type))
    rows.append([(_("« Back"), StuckListCb(wf=workflow_type))])
    return text, _keyboard(rows)


def _transition_line(row: Any) -> str:
    """One history row: when, what kind, the states, or for a (re)assignment both people,
    and who did it."""
    keys = row.keys() if hasattr(row, "keys") else ()
    if row["kind"] in ("assign", "reassign") and "to_assignee_name" in keys:
        before = row["from_assignee_name"] or _("nobody")
        after = row["to_assignee_name"] or _("nobody")
        change = f"{before} → {after}"
    else:
        change = f"{state_label(row['from_state'])} → {state_label(row['to_state'])}"
    line = f"{row['created_at']:%Y-%m-%d %H:%M} {kind_label(row['kind'])}: {change}"
    return line + (f" ({row['actor_name']})" if row["actor_name"] else "")


def detail_screen(detail: RequestDetail, back: StuckDetailCb) -> Screen:
    """The request, why it is stuck, its history, its recovery actions and the actions."""
    request = detail.request
    lines: list[str] = [
        html(
            _("Request #{id} ({workflow})"),
            id=request["id"],
            workflow=workflow_label(request["workflow_type"]),
        ),
        html(
            _("State: {state}, owner: {role}, status: {status}"),
            state=state_label(request["current_state"]),
            role=role_label(request["owner_role"]),
            status=status_label(request["status"]),
        ),
        _assignee_line(detail.assignee),
        _stuck_line(detail.stuck),
        html(_("Description: {text}"), text=request["description"][:300]),
        "",
        _("History:"),
    ]
    lines += [_transition_line(row) for row in detail.history]
    if detail.recovery:
        lines += ["", _("Recovery actions:")]
        lines += [_history_line(row) for row in detail.recovery]
    rows = _action_rows(request, detail.previous_state)
    rows.append([(_("Recovery log"), StuckHistoryCb(request_id=request["id"]))])
    rows.append([(_("« Back"), StuckListCb(page=back.page, wf=back.wf, st=back.st))])
    return join("\n", lines), _keyboard(rows)


def _assignee_line(assignee: asyncpg.Record | None) -> str:
    """Who holds the request (a ``users`` row, or None: the whole role), marked when they
    are inactive or blocked the bot."""
    if assignee is None:
        return _("Assignee: nobody (the whole role)")
    marks = []
    if not assignee["is_active"]:
        marks.append(str(REASON_LABELS["assignee_inactive"]))
    if assignee["blocked_bot_at"] is not None:
        marks.append(str(REASON_LABELS["assignee_blocked"]))
    line = html(_("Assignee: {name}"), name=assignee["full_name"])
    return line + (f" ({', '.join(marks)})" if marks else "")


def _stuck_line(stuck: StuckRequest | None) -> str:
    """Since when and why the request is stuck, or that it is not."""
    if stuck is None:
        return _("Not stuck now.")
    return html(
        _("Stuck for {time} (deadline {deadline}): {reasons}"),
        time=duration(stuck.stuck_for_s),
        deadline=duration(stuck.threshold_s) if stuck.threshold_s else "-",
        reasons=_reasons(stuck.reasons),
    )


def _action_rows(
    request: asyncpg.Record, previous_state: str | None
) -> list[list[tuple[str, CallbackData]]]:
    """The buttons of the recovery actions the request allows (an active one only): force
    (a next step exists), reset (a previous state is known), complete and reassign (a role
    owns the state)."""
    if request["status"] != "active":
        return []
    ident = {"request_id": request["id"], "version": request["version"]}
    owned = request["owner_role"] is not None
    offered = [
        (RecoveryAction.FORCE, ActionCode.FORCE, _has_next_step(request)),
        (RecoveryAction.RESET, ActionCode.RESET, previous_state is not None),
        (RecoveryAction.COMPLETE, ActionCode.COMPLETE, owned),
    ]
    rows: list[list[tuple[str, CallbackData]]] = [
        [(str(BUTTON_LABELS[action]), StuckActionCb(action=code, **ident))]
        for action, code, shown in offered
        if shown
    ]
    if owned:
        rows.append([(str(BUTTON_LABELS[RecoveryAction.REASSIGN]), StuckAssigneesCb(**ident))])
    return rows


def _has_next_step(request: asyncpg.Record) -> bool:
    """Whether the request's workflow has a step after its current state."""
    return wf.next_step(request["workflow_type"], request["current_state"]) is not None


# --- history -------------------------------------------------------------------------------


def _history_line(row: asyncpg.Record) -> str:
    """A ``workflow_recovery_log`` row in the one line format of the recovery history
    screen (``handlers.admin.history.render_entry``)."""
    request_id = row["request_id"]
    return render_entry(
        HistoryEntry(
            source="workflow",
            created_at=row["created_at"],
            admin_name=row["admin_name"],
            admin_telegram_id=row["admin_telegram_id"],
            action=row["action"],
            target_type="request",
            target_id=None if request_id is None else str(request_id),
            success=row["success"],
            reason=row["reason"],
            error=row["error_message"],
            change=_state_change(row["before_state"], row["after_state"]),
            batch=row["batch_id"] is not None,
        )
    )


def _state_change(before: Any, after: Any) -> tuple[str, str] | None:
    """(state before, state after) of a logged action that changed the request's state."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return None
    states = before.get("state"), after.get("state")
    if not all(isinstance(state, str) for state in states) or states[0] == states[1]:
        return None
    return str(states[0]), str(states[1])


def history_screen(
    rows: Sequence[asyncpg.Record], total: int, page: int, request_id: int
) -> Screen:
    """A page of the recovery history (of one request, or all)."""
    if request_id:
        header = html(
            _("Recovery history of request #{id}, page {page} of {pages}:"),
            id=request_id,
            page=page + 1,
            pages=_pages(total),
        )
        back: CallbackData = StuckDetailCb(request_id=request_id)
    else:
        header = html(
            _("Recovery history, page {page} of {pages}:"), page=page + 1, pages=_pages(total)
        )
        back = StuckListCb()
    lines = [header] + ([_history_line(row) for row in rows] or [_("none")])
    buttons = [
        _nav(page, total, lambda p: StuckHistoryCb(request_id=request_id, page=p)),
        [(_("« Back"), back)],
    ]
    return join("\n", lines), _keyboard(buttons)
