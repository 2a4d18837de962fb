"""Screens of the single recovery actions: reassignment candidates, the confirmation that
spells out the consequences, the reason prompt, the outcome and the refusals."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import asyncpg
from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardMarkup
from aiogram.utils.i18n import gettext as _

from handlers.admin.stuck_pending import REASON_MAX
from handlers.admin.stuck_views import (  # the section's shared labels and helpers
    CODE_OF,
    REFUSALS,
    Screen,
    _keyboard,
    _materials,
    _nav,
    _pages,
)
from handlers.callbacks import (
    ActionCode,
    StuckActionCb,
    StuckAssigneesCb,
    StuckDetailCb,
    StuckListCb,
)
from handlers.render import html, join, plain
from handlers.texts import role_label, state_label
from recovery.workflows import Outcome, Plan, RecoveryAction

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
    rid = plan.request_id
    lines = _CONSEQUENCES[plan.action](plan)
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


def _force_lines(plan: Plan) -> list[str]:
    """A force: from where to where."""
    return [
        html(
            _("Force request #{id} from {current} to {next}?"),
            id=plan.request_id,
            current=state_label(plan.from_state),
            next=state_label(plan.to_state),
        )
    ]


def _reset_lines(plan: Plan) -> list[str]:
    """A reset: from where back to where, and the materials returned to stock."""
    lines: list[str] = [
        html(
            _("Reset request #{id} from {current} back to {previous}?"),
            id=plan.request_id,
            current=state_label(plan.from_state),
            previous=state_label(plan.to_state),
        )
    ]
    if plan.returns:
        lines.append(
            _("These materials, issued in the step being undone, will be returned to stock:")
        )
        lines += _materials(plan.returns)
    else:
        lines.append(_("No materials were issued in the step being undone; stock is unchanged."))
    return lines


def _complete_lines(plan: Plan) -> list[str]:
    """A completion: the steps skipped and the materials that stay charged."""
    current = state_label(plan.from_state)
    lines: list[str] = [
        html(
            _("Force request #{id} from {current} to completion?"),
            id=plan.request_id,
            current=current,
        )
    ]
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
    return lines


def _reassign_lines(plan: Plan) -> list[str]:
    """A reassignment: to whom; the state and its clock stay."""
    return [
        html(
            _("Reassign request #{id} ({state}) to {name}?"),
            id=plan.request_id,
            state=state_label(plan.from_state),
            name=plan.to_assignee_name,
        ),
        _("The state and its deadline clock do not change."),
    ]


_CONSEQUENCES: dict[RecoveryAction, Callable[[Plan], list[str]]] = {
    RecoveryAction.FORCE: _force_lines,
    RecoveryAction.RESET: _reset_lines,
    RecoveryAction.COMPLETE: _complete_lines,
    RecoveryAction.REASSIGN: _reassign_lines,
}
"""The lines of the confirmation screen that spell out each action's consequences."""


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


def outcome_screen(outcome: Outcome, back: StuckListCb | None = None) -> Screen:
    """An applied action; ``back``: the stuck list (page and filter) its "Stuck workflows"
    button returns to (default: the first unfiltered page)."""
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
    return join("\n", lines), _after_keyboard(request["id"], back)


def refusal_screen(code: str, request_id: int, back: StuckListCb | None = None) -> Screen:
    """A refused action: why, and that nothing changed; ``back`` as for ``outcome_screen``."""
    text = html(str(REFUSALS.get(code, REFUSALS["refused"])), id=request_id)
    if code == "not_found":  # nothing to open: back to the list
        return text, _keyboard([[(_("Stuck workflows"), back or StuckListCb())]])
    return text, _after_keyboard(request_id, back)


def expired_screen(back: StuckListCb | None = None) -> Screen:
    """A reason sent when no confirmation is pending (expired or already applied)."""
    text = _(
        "Nothing is waiting for a reason (expired or already applied). Open the request again."
    )
    return text, _keyboard([[(_("Stuck workflows"), back or StuckListCb())]])


def _after_keyboard(request_id: int, back: StuckListCb | None) -> InlineKeyboardMarkup:
    return _keyboard(
        [
            [(_("Open the request"), StuckDetailCb(request_id=request_id))],
            [(_("Stuck workflows"), back or StuckListCb())],
        ]
    )
