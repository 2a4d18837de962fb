"""The four recovery actions on one stuck request: the confirmation screen that spells out
the consequences (for reassign: the candidates first), an optional reason, the result; and
the reason message of a confirmed action or batch."""

from __future__ import annotations

import contextlib

import asyncpg
from aiogram import F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.types import CallbackQuery, Message

from handlers.admin import stuck_action_views as action_views
from handlers.admin import stuck_batch_views as batch_views
from handlers.admin import stuck_views as views
from handlers.admin.stuck_batch import run_batch
from handlers.admin.stuck_pending import (
    REASON,
    REVIEW,
    StuckRecovery,
    clean_reason,
    drop_reason,
    last_list,
    wait_for_reason,
)
from handlers.callbacks import (
    ActionCode,
    StuckActionCb,
    StuckAssigneesCb,
    StuckDetailCb,
    StuckListCb,
)
from handlers.filters import TextAnswer
from handlers.screens import edit_or_send, replace
from recovery.actors import Actor
from recovery.exceptions import DomainError
from recovery.workflows import RecoveryAction, WorkflowRecoveryManager, refusal_code

router = Router(name=__name__)

PAGE_SIZE = views.PAGE_SIZE


@router.callback_query(StuckAssigneesCb.filter())
async def assignees(
    query: CallbackQuery,
    callback_data: StuckAssigneesCb,
    workflow_recovery: WorkflowRecoveryManager,
) -> None:
    """A page of the users the request can be given to (the version the admin saw must
    still be current)."""
    await _show_candidates(
        query,
        workflow_recovery,
        callback_data.request_id,
        callback_data.version,
        callback_data.page,
    )


async def _show_candidates(
    query: CallbackQuery,
    manager: WorkflowRecoveryManager,
    request_id: int,
    version: int,
    page: int,
) -> None:
    try:
        request = await manager.get_request(request_id)
    except DomainError as exc:
        await edit_or_send(query, *action_views.refusal_screen(refusal_code(exc), request_id))
        return
    if request["version"] != version:
        await edit_or_send(query, *action_views.refusal_screen("stale", request_id))
        return
    if request["status"] != "active" or request["owner_role"] is None:
        await edit_or_send(query, *action_views.refusal_screen("not_active", request_id))
        return
    rows, total = await manager.reassign_candidates(
        request["owner_role"],
        exclude_user_id=request["assignee_id"],
        limit=PAGE_SIZE,
        offset=page * PAGE_SIZE,
    )
    if not rows and total and page > 0:  # past the end (the list shrank): the last page
        page = (total - 1) // PAGE_SIZE
        rows, total = await manager.reassign_candidates(
            request["owner_role"],
            exclude_user_id=request["assignee_id"],
            limit=PAGE_SIZE,
            offset=page * PAGE_SIZE,
        )
    await edit_or_send(query, *action_views.candidates_screen(request, rows, total, page))


@router.callback_query(StuckActionCb.filter(F.step == 0))
async def confirm_action(
    query: CallbackQuery,
    callback_data: StuckActionCb,
    workflow_recovery: WorkflowRecoveryManager,
    state: FSMContext,
) -> None:
    """The confirmation screen: what the action will do (states, people notified, materials
    returned or kept), computed now; refused when the request moved since the admin looked."""
    await drop_reason(state)
    action = views.ACTION_OF[callback_data.action]
    request_id = callback_data.request_id
    if action is RecoveryAction.REASSIGN and callback_data.arg == 0:
        await _show_candidates(query, workflow_recovery, request_id, callback_data.version, 0)
        return
    try:
        plan = await workflow_recovery.preview(
            action,
            request_id,
            assignee_id=callback_data.arg if action is RecoveryAction.REASSIGN else None,
        )
    except DomainError as exc:
        back = await last_list(state)
        await edit_or_send(query, *action_views.refusal_screen(refusal_code(exc), request_id, back))
        return
    if plan.version != callback_data.version:
        back = await last_list(state)
        await edit_or_send(query, *action_views.refusal_screen("stale", request_id, back))
        return
    await edit_or_send(query, *action_views.confirm_screen(plan))


@router.callback_query(StuckActionCb.filter(F.step == 1))
async def ask_reason(query: CallbackQuery, callback_data: StuckActionCb, state: FSMContext) -> None:
    """Confirmed: wait for an optional reason (a message) or Skip."""
    await wait_for_reason(
        query,
        state,
        {
            "kind": "single",
            "action": callback_data.action.value,
            "request_id": callback_data.request_id,
            "version": callback_data.version,
            "arg": callback_data.arg,
        },
    )
    skip = StuckActionCb(**{**callback_data.model_dump(), "step": 2})
    await edit_or_send(
        query, *action_views.reason_prompt(skip, StuckDetailCb(request_id=callback_data.request_id))
    )


@router.callback_query(StuckActionCb.filter(F.step == 2))
async def apply_without_reason(
    query: CallbackQuery,
    callback_data: StuckActionCb,
    user: asyncpg.Record,
    workflow_recovery: WorkflowRecoveryManager,
    state: FSMContext,
) -> None:
    """Skip: apply the action against the version the admin saw."""
    await drop_reason(state)
    screen = await _apply_single(
        workflow_recovery,
        Actor.of(user),
        callback_data.action,
        callback_data.request_id,
        callback_data.version,
        callback_data.arg,
        reason=None,
        back=await last_list(state),
    )
    await edit_or_send(query, *screen)


async def _apply_single(
    manager: WorkflowRecoveryManager,
    admin: Actor,
    code: ActionCode,
    request_id: int,
    version: int,
    arg: int,
    *,
    reason: str | None,
    back: StuckListCb,
) -> views.Screen:
    action = views.ACTION_OF[code]
    try:
        outcome = await manager.apply(
            action,
            request_id,
            expected_version=version,
            admin=admin,
            reason=reason,
            assignee_id=arg if action is RecoveryAction.REASSIGN else None,
            expected_fingerprint=arg if action is RecoveryAction.RESET else None,
        )
    except DomainError as exc:
        return action_views.refusal_screen(refusal_code(exc), request_id, back)
    return action_views.outcome_screen(outcome, back)


@router.message(StateFilter(StuckRecovery.reason), TextAnswer())
async def reason_given(
    message: Message,
    user: asyncpg.Record,
    workflow_recovery: WorkflowRecoveryManager,
    state: FSMContext,
) -> None:
    """The reason of the confirmed action or batch: apply it now."""
    pending = await REASON.take(state)
    await drop_reason(state)
    if pending is None:
        text, markup = action_views.expired_screen(await last_list(state))
        await message.answer(text, reply_markup=markup)
        return
    reason = clean_reason(message.text)
    if pending.get("message_id") and message.bot is not None:  # retire the Skip button
        with contextlib.suppress(TelegramBadRequest):
            await message.bot.edit_message_reply_markup(
                chat_id=message.chat.id, message_id=pending["message_id"], reply_markup=None
            )
    if pending["kind"] == "batch":
        batch = await REVIEW.take(state, pending.get("batch") or "")
        if batch is None:
            text, markup = batch_views.batch_outdated_screen(await last_list(state))
            await message.answer(text, reply_markup=markup)
            return
        progress = await message.answer(
            batch_views.batch_progress_text(RecoveryAction(batch["action"]), len(batch["targets"]))
        )
        screen = await run_batch(workflow_recovery, Actor.of(user), batch, reason)
        await replace(progress, *screen)
        return
    text, markup = await _apply_single(
        workflow_recovery,
        Actor.of(user),
        ActionCode(pending["action"]),
        pending["request_id"],
        pending["version"],
        pending["arg"],
        reason=reason,
        back=await last_list(state),
    )
    await message.answer(text, reply_markup=markup)
