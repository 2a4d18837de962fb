"""Screens of batch recovery: the action, the assignee, the review, the progress and the
counts of the result."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from aiogram.filters.callback_data import CallbackData
from aiogram.utils.i18n import gettext as _

from database.compensation import Outstanding
from handlers.admin.stuck_views import (  # the section's shared labels and helpers
    ACTION_NAMES,
    ACTION_OF,
    BUTTON_LABELS,
    FAILURES_SHOWN,
    IDS_SHOWN,
    SHORT_REFUSALS,
    Screen,
    _keyboard,
    _materials,
    _nav,
    _pages,
    filter_text,
)
from handlers.callbacks import (
    HistoryCb,
    StuckBatchCb,
    StuckBatchRunCb,
    StuckListCb,
)
from handlers.render import html, join, plain
from handlers.texts import ngettext, role_label
from recovery.batch_selection import batch_role
from recovery.workflows import BatchResult, RecoveryAction

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
    lines += _batch_effects(action, materials, assignee_name)
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


def _batch_effects(
    action: RecoveryAction, materials: Sequence[Outstanding], assignee_name: str | None
) -> list[str]:
    """What the batch does besides the state: the materials a reset returns, those that a
    completion leaves charged, a reassignment's new assignee."""
    if action is RecoveryAction.RESET:
        if materials:
            return [_("Materials to return to stock:"), *_materials(materials)]
        return [_("No materials to return.")]
    if action is RecoveryAction.COMPLETE and materials:
        return [_("Materials that stay charged:"), *_materials(materials)]
    if action is RecoveryAction.REASSIGN:
        return [html(_("New assignee: {name}."), name=assignee_name)]
    return []


def batch_progress_text(action: RecoveryAction, count: int) -> str:
    """Shown while a batch runs."""
    template = ngettext(
        "Applying {action} to {n} request…", "Applying {action} to {n} requests…", count
    )
    return html(template, action=ACTION_NAMES[action], n=count)


def batch_outdated_screen(back: StuckListCb) -> Screen:
    """A batch button whose review is gone (applied, replaced or expired); ``back``: the
    list the admin last looked at (its page and filter)."""
    return _(
        "This review is outdated (already applied or replaced by a newer one). Open the batch "
        "screen again."
    ), _keyboard([[(_("Stuck workflows"), back)]])


def _numbers(ids: Sequence[int]) -> str:
    """``#1, #2, …`` for at most ``IDS_SHOWN`` request ids, then how many more."""
    text = ", ".join(f"#{request_id}" for request_id in ids[:IDS_SHOWN])
    if len(ids) > IDS_SHOWN:
        text += " " + plain(_("(+{n} more)"), n=len(ids) - IDS_SHOWN)
    return text


def batch_result_screen(result: BatchResult, back: StuckListCb | None = None) -> Screen:
    """How many succeeded, were stale or failed, their request numbers, and why the first
    failures failed; ``back``: the list (the batch's filter) "Stuck workflows" returns to."""
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
            [(_("Stuck workflows"), back or StuckListCb())],
        ]
    )
