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
from handlers.callbacks import (
    ActionCode,
    HistoryCb,
    MenuCb,
    StuckActionCb,
    StuckAssigneesCb,
    StuckBatchCb,
    StuckBatchRunCb,
    StuckDetailCb,
    StuckFilterCb,
    StuckHistoryCb,
    StuckListCb,
)
from handlers.render import html, join, plain
from handlers.texts import (
    duration,
    kind_label,
    ngettext,
    role_label,
    state_label,
    status_label,
    workflow_label,
)
from recovery import workflow_definitions as wf
from recovery.workflows import BatchResult, Outcome, Plan, RecoveryAction, RequestDetail, StuckPage

Screen = tuple[str, InlineKeyboardMarkup]

PAGE_SIZE = 5
FAILURES_SHOWN = 10
IDS_SHOWN = 30  # request numbers listed per outcome of a batch; the rest are counted
MATERIALS_SHOWN = 20
REASON_MAX = 500  # characters of a recovery action's reason that are kept

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
    return max(1, (total + PAGE_SIZE - 1) // PAGE_SIZE)


def _keyboard(rows: Sequence[Sequence[tuple[str, CallbackData]]]) -> InlineKeyboardMarkup:
    keyboard = InlineKeyboardBuilder()
    for row in rows:
        if row:
            keyboard.row(*[_button(text, data) for text, data in row])
    return keyboard.as_markup()


def _button(text: str, data: CallbackData) -> InlineKeyboardButton:
    return InlineKeyboardButton(text=text, callback_data=data.pack())


def _nav(page: int, total: int, make: Any) -> list[tuple[str, CallbackData]]:
    row: list[tuple[str, CallbackData]] = []
    if page > 0:
        row.append(("‹", make(page - 1)))
    if (page + 1) * PAGE_SIZE < total:
        row.append(("›", make(page + 1)))
    return row


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
    ]
    assignee = detail.assignee
    if assignee is None:
        lines.append(_("Assignee: nobody (the whole role)"))
    else:
        marks = []
        if not assignee["is_active"]:
            marks.append(str(REASON_LABELS["assignee_inactive"]))
        if assignee["blocked_bot_at"] is not None:
            marks.append(str(REASON_LABELS["assignee_blocked"]))
        lines.append(
            html(_("Assignee: {name}"), name=assignee["full_name"])
            + (f" ({', '.join(marks)})" if marks else "")
        )
    if detail.stuck is not None:
        lines.append(
            html(
                _("Stuck for {time} (deadline {deadline}): {reasons}"),
                time=duration(detail.stuck.stuck_for_s),
                deadline=duration(detail.stuck.threshold_s) if detail.stuck.threshold_s else "-",
                reasons=_reasons(detail.stuck.reasons),
            )
        )
    else:
        lines.append(_("Not stuck now."))
    lines.append(html(_("Description: {text}"), text=request["description"][:300]))
    lines += ["", _("History:")]
    lines += [_transition_line(row) for row in detail.history]
    if detail.recovery:
        lines += ["", _("Recovery actions:")]
        lines += [_history_line(row) for row in detail.recovery]
    rows: list[list[tuple[str, CallbackData]]] = []
    if request["status"] == "active":
        version = request["version"]
        ident = {"request_id": request["id"], "version": version}
        if wf.next_step(request["workflow_type"], request["current_state"]) is not None:
            rows.append(
                [
                    (
                        str(BUTTON_LABELS[RecoveryAction.FORCE]),
                        StuckActionCb(action=ActionCode.FORCE, **ident),
                    )
                ]
            )
        if detail.previous_state is not None:
            rows.append(
                [
                    (
                        str(BUTTON_LABELS[RecoveryAction.RESET]),
                        StuckActionCb(action=ActionCode.RESET, **ident),
                    )
                ]
            )
        if request["owner_role"] is not None:
            rows.append(
                [
                    (
                        str(BUTTON_LABELS[RecoveryAction.COMPLETE]),
                        StuckActionCb(action=ActionCode.COMPLETE, **ident),
                    )
                ]
            )
            rows.append([(str(BUTTON_LABELS[RecoveryAction.REASSIGN]), StuckAssigneesCb(**ident))])
    rows.append([(_("Recovery log"), StuckHistoryCb(request_id=request["id"]))])
    rows.append([(_("« Back"), StuckListCb(page=back.page, wf=back.wf, st=back.st))])
    return join("\n", lines), _keyboard(rows)


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


# --- single actions ------------------------------------------------------------------------


def candidates_screen(
    request: asyncpg.Record, rows: Sequence[asyncpg.Record], total: int, page: int
) -> Screen:
    """A page of users the request can be given to."""
    role = role_label(request["owner_role"])
    buttons: list[list[tuple[str, CallbackData]]] = [
        [
            (
                plain(
                    _("{name} · {n} active"),
                    name=row["full_name"] or row["telegram_id"],
                    n=row["active_requests"],
                ),
                StuckActionCb(
                    action=ActionCode.REASSIGN,
                    request_id=request["id"],
                    version=request["version"],
                    arg=row["id"],
                ),
            )
        ]
        for row in rows
    ]
    buttons.append(
        _nav(
            page,
            total,
            lambda p: StuckAssigneesCb(
                request_id=request["id"], version=request["version"], page=p
            ),
        )
    )
    buttons.append([(_("« Back"), StuckDetailCb(request_id=request["id"]))])
    if total:
        text = html(
            _("Reassign request #{id}: choose an active {role} (page {page} of {pages}):"),
            id=request["id"],
            role=role,
            page=page + 1,
            pages=_pages(total),
        )
    else:
        text = html(_("No active {role} can take request #{id} now."), role=role, id=request["id"])
    return text, _keyboard(buttons)


def confirm_screen(plan: Plan) -> Screen:
    """What the action will do, before the admin agrees."""
    rid, current = plan.request_id, state_label(plan.from_state)
    lines: list[str] = []
    if plan.action is RecoveryAction.FORCE:
        lines.append(
            html(
                _("Force request #{id} from {current} to {next}?"),
                id=rid,
                current=current,
                next=state_label(plan.to_state),
            )
        )
    elif plan.action is RecoveryAction.RESET:
        lines.append(
            html(
                _("Reset request #{id} from {current} back to {previous}?"),
                id=rid,
                current=current,
                previous=state_label(plan.to_state),
            )
        )
        if plan.returns:
            lines.append(
                _("These materials, issued in the step being undone, will be returned to stock:")
            )
            lines += _materials(plan.returns)
        else:
            lines.append(
                _("No materials were issued in the step being undone; stock is unchanged.")
            )
    elif plan.action is RecoveryAction.COMPLETE:
        lines.append(
            html(_("Force request #{id} from {current} to completion?"), id=rid, current=current)
        )
        if plan.skipped_states:
            lines.append(
                html(
                    _("Steps skipped: {steps}."),
                    steps=", ".join(state_label(s) for s in plan.skipped_states),
                )
            )
        if plan.kept:
            lines.append(_("Materials issued for it stay charged to it (nothing is returned):"))
            lines += _materials(plan.kept)
        else:
            lines.append(_("No materials were issued for it."))
    else:
        lines.append(
            html(
                _("Reassign request #{id} ({state}) to {name}?"),
                id=rid,
                state=current,
                name=plan.to_assignee_name,
            )
        )
        lines.append(_("The state and its deadline clock do not change."))
    lines.append(_notified(plan))
    lines.append(_("Confirm applies it now; with a reason, you send the reason first."))
    code = CODE_OF[plan.action]
    arg = plan.to_assignee_id if plan.action is RecoveryAction.REASSIGN else plan.fingerprint
    confirm = StuckActionCb(action=code, request_id=rid, version=plan.version, arg=arg or 0)
    return join("\n", lines), _keyboard(
        [
            [(_("Confirm"), confirm.model_copy(update={"step": 2}))],
            [(_("Confirm with a reason"), confirm.model_copy(update={"step": 1}))],
            [(_("Cancel"), StuckDetailCb(request_id=rid))],
        ]
    )


def _notified(plan: Plan) -> str:
    if plan.to_status == "completed":
        return _("The client will be notified that the request is completed.")
    if plan.to_assignee_name:
        return html(_("{name} and the client will be notified."), name=plan.to_assignee_name)
    return html(
        _("The {role} staff and the client will be notified."), role=role_label(plan.to_role)
    )


def reason_prompt(skip: CallbackData, cancel: CallbackData) -> Screen:
    """The optional reason step."""
    markup = _keyboard([[(_("Apply without a reason"), skip)], [(_("Cancel"), cancel)]])
    return html(_("Send the reason as a message (at most {n} characters)."), n=REASON_MAX), markup


def outcome_screen(outcome: Outcome) -> Screen:
    """An applied action."""
    request, plan = outcome.request, outcome.plan
    if plan.action is RecoveryAction.REASSIGN:
        lines: list[str] = [
            html(
                _("Done: request #{id} is now assigned to {name}."),
                id=request["id"],
                name=plan.to_assignee_name,
            )
        ]
    else:
        lines = [
            html(
                _("Done: request #{id} moved from {old} to {new}."),
                id=request["id"],
                old=state_label(plan.from_state),
                new=state_label(request["current_state"]),
            )
        ]
    if outcome.reversals:
        by_id = {item.issue_id: item for item in plan.returns}
        lines.append(_("Returned to stock:"))
        lines += _materials([by_id[r.issue_id] for r in outcome.reversals if r.issue_id in by_id])
    lines.append(_notified(plan))
    return join("\n", lines), _after_keyboard(request["id"])


def refusal_screen(code: str, request_id: int) -> Screen:
    """A refused action: why, and that nothing changed."""
    text = html(str(REFUSALS.get(code, REFUSALS["refused"])), id=request_id)
    if code == "not_found":  # nothing to open: back to the list
        return text, _keyboard([[(_("Stuck workflows"), StuckListCb())]])
    return text, _after_keyboard(request_id)


def expired_screen() -> Screen:
    """A reason sent when no confirmation is pending (expired or already applied)."""
    text = _(
        "Nothing is waiting for a reason (expired or already applied). Open the request again."
    )
    return text, _keyboard([[(_("Stuck workflows"), StuckListCb())]])


def _after_keyboard(request_id: int) -> InlineKeyboardMarkup:
    return _keyboard(
        [
            [(_("Open the request"), StuckDetailCb(request_id=request_id))],
            [(_("Stuck workflows"), StuckListCb())],
        ]
    )


# --- batch ---------------------------------------------------------------------------------


def batch_menu_screen(total: int, workflow_type: str | None, state: str | None) -> Screen:
    """Choose the action of a batch over the filter's stuck requests."""
    back = StuckListCb(wf=workflow_type, st=state)
    if not total:
        return _("No stuck workflows."), _keyboard([[(_("« Back"), back)]])
    text = ngettext(
        "Batch recovery of the {n} stuck request matching: {filter}. Choose the action:",
        "Batch recovery of the {n} stuck requests matching: {filter}. Choose the action:",
        total,
    )
    rows: list[list[tuple[str, CallbackData]]] = [
        [(str(BUTTON_LABELS[action]), StuckBatchCb(wf=workflow_type, st=state, action=code))]
        for code, action in ACTION_OF.items()
        if action is not RecoveryAction.REASSIGN or batch_role(workflow_type, state)
    ]
    rows.append([(_("« Back"), back)])
    return html(text, n=total, filter=filter_text(workflow_type, state)), _keyboard(rows)


def batch_role(workflow_type: str | None, state: str | None) -> str | None:
    """The role owning the filter's state: a batch reassignment needs one (type and state
    both chosen)."""
    if workflow_type is None or state is None:
        return None
    return wf.step_of(workflow_type, state).role


def batch_candidates_screen(
    callback: StuckBatchCb, role: str, rows: Sequence[asyncpg.Record], total: int
) -> Screen:
    """A page of users all the filter's stuck requests can be given to."""
    buttons: list[list[tuple[str, CallbackData]]] = [
        [
            (
                plain(
                    _("{name} · {n} active"),
                    name=row["full_name"] or row["telegram_id"],
                    n=row["active_requests"],
                ),
                StuckBatchCb(wf=callback.wf, st=callback.st, action=callback.action, arg=row["id"]),
            )
        ]
        for row in rows
    ]
    buttons.append(
        _nav(
            callback.page,
            total,
            lambda p: StuckBatchCb(wf=callback.wf, st=callback.st, action=callback.action, page=p),
        )
    )
    buttons.append([(_("« Back"), StuckBatchCb(wf=callback.wf, st=callback.st))])
    text = html(
        _("Reassign all of them to an active {role} (page {page} of {pages}):"),
        role=role_label(role),
        page=callback.page + 1,
        pages=_pages(total),
    )
    return text, _keyboard(buttons)


def batch_review_screen(
    action: RecoveryAction,
    count: int,
    capped: bool,
    workflow_type: str | None,
    state: str | None,
    materials: Sequence[Outstanding],
    assignee_name: str | None,
    token: str,
    request_ids: Sequence[int] = (),
) -> Screen:
    """How many requests the batch touches, which ones (their numbers; past ``IDS_SHOWN``
    how many more) and what it does, before the admin agrees."""
    lines: list[str] = [
        html(
            ngettext(
                "Review: {action} on {n} stuck request ({filter}).",
                "Review: {action} on {n} stuck requests ({filter}).",
                count,
            ),
            action=ACTION_NAMES[action],
            n=count,
            filter=filter_text(workflow_type, state),
        )
    ]
    if request_ids:
        lines.append(html(_("Requests: {ids}"), ids=_numbers(list(request_ids))))
    if capped:
        lines.append(
            html(
                ngettext(
                    "Only the {n} longest stuck is included; run it again for the rest.",
                    "Only the {n} longest stuck are included; run it again for the rest.",
                    count,
                ),
                n=count,
            )
        )
    if action is RecoveryAction.RESET:
        if materials:
            lines.append(_("Materials to return to stock:"))
            lines += _materials(materials)
        else:
            lines.append(_("No materials to return."))
    elif action is RecoveryAction.COMPLETE and materials:
        lines.append(_("Materials that stay charged:"))
        lines += _materials(materials)
    elif action is RecoveryAction.REASSIGN:
        lines.append(html(_("New assignee: {name}."), name=assignee_name))
    lines.append(
        _(
            "Each request is handled in its own transaction; a request that moved since this "
            "review is skipped as stale, nothing is applied twice."
        )
    )
    lines.append(_("Confirm applies it now; with a reason, you send the reason first."))
    return join("\n", lines), _keyboard(
        [
            [(_("Confirm"), StuckBatchRunCb(token=token, step=2))],
            [(_("Confirm with a reason"), StuckBatchRunCb(token=token, step=1))],
            [(_("Cancel"), StuckListCb(wf=workflow_type, st=state))],
        ]
    )


def batch_progress_text(action: RecoveryAction, count: int) -> str:
    """Shown while a batch runs."""
    template = ngettext(
        "Applying {action} to {n} request…", "Applying {action} to {n} requests…", count
    )
    return html(template, action=ACTION_NAMES[action], n=count)


def batch_outdated_screen() -> Screen:
    """A batch button whose review is gone (applied, replaced or expired)."""
    return _(
        "This review is outdated (already applied or replaced by a newer one). Open the batch "
        "screen again."
    ), _keyboard([[(_("Stuck workflows"), StuckListCb())]])


def _numbers(ids: Sequence[int]) -> str:
    """``#1, #2, …`` for at most ``IDS_SHOWN`` request ids, then how many more."""
    text = ", ".join(f"#{request_id}" for request_id in ids[:IDS_SHOWN])
    if len(ids) > IDS_SHOWN:
        text += " " + plain(_("(+{n} more)"), n=len(ids) - IDS_SHOWN)
    return text


def batch_result_screen(result: BatchResult) -> Screen:
    """How many succeeded, were stale or failed, their request numbers, and why the first
    failures failed."""
    lines: list[str] = [
        html(
            _(
                "Batch {action} done: {ok} succeeded, {stale} stale (moved since the review), "
                "{failed} failed."
            ),
            action=ACTION_NAMES[result.action],
            ok=len(result.succeeded),
            stale=len(result.stale),
            failed=len(result.failed),
        )
    ]
    if result.returned_units:
        lines.append(html(_("Units returned to stock: {n}."), n=result.returned_units))
    if result.succeeded:
        lines.append(html(_("Succeeded: {ids}"), ids=_numbers(result.succeeded)))
    if result.stale:
        lines.append(html(_("Stale: {ids}"), ids=_numbers(result.stale)))
    if result.failed:
        lines.append(_("Failed:"))
    for request_id, code in result.failed[:FAILURES_SHOWN]:
        lines.append(f"#{request_id}: {SHORT_REFUSALS.get(code, code)}")
    if len(result.failed) > FAILURES_SHOWN:
        others = [request_id for request_id, _code in result.failed[FAILURES_SHOWN:]]
        lines.append(_numbers(others))
    return join("\n", lines), _keyboard(
        [
            [(_("Recovery history"), HistoryCb())],
            [(_("Stuck workflows"), StuckListCb())],
        ]
    )


# --- history -------------------------------------------------------------------------------


def _history_line(row: asyncpg.Record) -> str:
    outcome = "✓" if row["success"] else "✗"
    action = ACTION_NAMES.get(RecoveryAction(row["action"]), row["action"])
    who = row["admin_name"] or row["admin_telegram_id"] or "-"
    line = (
        f"{row['created_at']:%Y-%m-%d %H:%M} {outcome} {action} #{row['request_id'] or '-'} {who}"
    )
    before, after = row["before_state"] or {}, row["after_state"] or {}
    if row["success"] and before and after:
        line += f": {state_label(before.get('state'))} → {state_label(after.get('state'))}"
    elif not row["success"] and row["error_message"]:
        code = row["error_message"].split(":", 1)[0]
        line += f": {SHORT_REFUSALS.get(code, code)}"
    if row["batch_id"] is not None:
        line += " " + _("(batch)")
    if row["reason"]:
        line += f" «{row['reason'][:100]}»"
    return line


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
