"""The stuck-workflow section of ``/workflow_recovery``: paginated list with filters, detail
with history, the four recovery actions (confirmation that spells out the consequences, an
optional reason, result), batch recovery after a review, recovery history.

Admin access is checked by the package's middleware (``handlers/admin/__init__.py``) on
every message and callback. Every callback is answered once (``AnswerEveryCallback``; a batch
run is answered before it starts).
A callback whose fields do not make sense any more (an older layout, a filter that no
longer exists) gets the "menu is outdated" answer and a fresh menu. The reason step uses
aiogram's FSM: what waits for a reason is kept in the admin's FSM data, for at most
``PENDING_TTL_S`` seconds.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from typing import Any

import asyncpg
from aiogram import F, Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, Message
from aiogram.utils.callback_answer import CallbackAnswer

from handlers.admin import stuck_views as views
from handlers.admin.menu import fresh_menu
from handlers.callbacks import (
    ActionCode,
    StuckActionCb,
    StuckAssigneesCb,
    StuckBatchCb,
    StuckBatchRunCb,
    StuckDetailCb,
    StuckFilterCb,
    StuckHistoryCb,
    StuckListCb,
)
from handlers.filters import TextAnswer
from handlers.screens import answer_now, edit_or_send, replace
from recovery import workflow_definitions as wf
from recovery.exceptions import DomainError
from recovery.workflows import AdminRef, RecoveryAction, WorkflowRecoveryManager, refusal_code

router = Router(name=__name__)

PAGE_SIZE = views.PAGE_SIZE
# A confirmation waits this long for its reason (seconds); a batch review as long.
PENDING_TTL_S = 15 * 60
# At most this many requests in one batch (the longest stuck first).
BATCH_MAX = 1000
# A reason longer than this is cut (characters; the prompt says so).
REASON_MAX = views.REASON_MAX

PENDING_KEY = "wr_pending"
BATCH_KEY = "wr_batch"

STATES_OF: dict[str, frozenset[str]] = {
    name: frozenset(step.state for step in steps if step.role is not None)
    for name, steps in wf.WORKFLOWS.items()
}
ALL_STATES: frozenset[str] = frozenset().union(*STATES_OF.values())


class StuckRecovery(StatesGroup):
    """Waiting for the optional reason of a confirmed action or batch."""

    reason = State()


def _valid_filter(workflow_type: str | None, state: str | None) -> bool:
    if workflow_type is not None and workflow_type not in STATES_OF:
        return False
    if state is None:
        return True
    return state in (STATES_OF[workflow_type] if workflow_type else ALL_STATES)


async def _drop_pending(state: FSMContext) -> None:
    """Forget a confirmation waiting for its reason (the admin went elsewhere)."""
    if await state.get_state() == StuckRecovery.reason.state:
        await state.set_state(None)
    await state.update_data({PENDING_KEY: None})


def _message(query: CallbackQuery) -> Message | None:
    return query.message if isinstance(query.message, Message) else None


# --- list, filter, detail, history ---------------------------------------------------------


@router.callback_query(StuckListCb.filter())
async def stuck_list(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    callback_data: StuckListCb,
    workflow_recovery: WorkflowRecoveryManager,
    state: FSMContext,
) -> None:
    """A page of stuck requests, longest in state first."""
    workflow_type, state_code = callback_data.wf, callback_data.st
    if not _valid_filter(workflow_type, state_code):
        await fresh_menu(query, callback_answer)
        return
    await _drop_pending(state)
    page = callback_data.page
    result = await workflow_recovery.find_stuck(
        workflow_type=workflow_type, state=state_code, limit=PAGE_SIZE, offset=page * PAGE_SIZE
    )
    if not result.items and page > 0 and result.total:  # the list shrank: show its last page
        page = (result.total - 1) // PAGE_SIZE
        result = await workflow_recovery.find_stuck(
            workflow_type=workflow_type, state=state_code, limit=PAGE_SIZE, offset=page * PAGE_SIZE
        )
    await edit_or_send(query, *views.list_screen(result, page, workflow_type, state_code))


@router.callback_query(StuckFilterCb.filter())
async def stuck_filter(
    query: CallbackQuery, callback_answer: CallbackAnswer, callback_data: StuckFilterCb
) -> None:
    """The filter picker."""
    if not _valid_filter(callback_data.wf, None):
        await fresh_menu(query, callback_answer)
        return
    await edit_or_send(query, *views.filter_screen(callback_data.wf))


@router.callback_query(StuckDetailCb.filter())
async def stuck_detail(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    callback_data: StuckDetailCb,
    workflow_recovery: WorkflowRecoveryManager,
    state: FSMContext,
) -> None:
    """A request's detail with its history and the recovery actions."""
    if not _valid_filter(callback_data.wf, callback_data.st):
        await fresh_menu(query, callback_answer)
        return
    await _drop_pending(state)
    try:
        detail = await workflow_recovery.get_detail(callback_data.request_id)
    except DomainError as exc:
        await edit_or_send(
            query, *views.refusal_screen(refusal_code(exc), callback_data.request_id)
        )
        return
    await edit_or_send(query, *views.detail_screen(detail, callback_data))


@router.callback_query(StuckHistoryCb.filter())
async def recovery_history(
    query: CallbackQuery, callback_data: StuckHistoryCb, workflow_recovery: WorkflowRecoveryManager
) -> None:
    """A page of one request's recovery actions (the whole menu's history is
    ``handlers.admin.history``); a page past the end shows the last one."""
    page = callback_data.page
    rows, total = await workflow_recovery.recovery_history(
        request_id=callback_data.request_id or None, limit=PAGE_SIZE, offset=page * PAGE_SIZE
    )
    last = max(0, (total - 1) // PAGE_SIZE)
    if page > last:
        page = last
        rows, total = await workflow_recovery.recovery_history(
            request_id=callback_data.request_id or None, limit=PAGE_SIZE, offset=page * PAGE_SIZE
        )
    await edit_or_send(query, *views.history_screen(rows, total, page, callback_data.request_id))


# --- single actions ------------------------------------------------------------------------


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
        await edit_or_send(query, *views.refusal_screen(refusal_code(exc), request_id))
        return
    if request["version"] != version:
        await edit_or_send(query, *views.refusal_screen("stale", request_id))
        return
    if request["status"] != "active" or request["owner_role"] is None:
        await edit_or_send(query, *views.refusal_screen("not_active", request_id))
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
    await edit_or_send(query, *views.candidates_screen(request, rows, total, page))


@router.callback_query(StuckActionCb.filter(F.step == 0))
async def confirm_action(
    query: CallbackQuery,
    callback_data: StuckActionCb,
    workflow_recovery: WorkflowRecoveryManager,
    state: FSMContext,
) -> None:
    """The confirmation screen: what the action will do (states, people notified, materials
    returned or kept), computed now; refused when the request moved since the admin looked."""
    await _drop_pending(state)
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
        await edit_or_send(query, *views.refusal_screen(refusal_code(exc), request_id))
        return
    if plan.version != callback_data.version:
        await edit_or_send(query, *views.refusal_screen("stale", request_id))
        return
    await edit_or_send(query, *views.confirm_screen(plan))


@router.callback_query(StuckActionCb.filter(F.step == 1))
async def ask_reason(query: CallbackQuery, callback_data: StuckActionCb, state: FSMContext) -> None:
    """Confirm with a reason: wait for the reason (a message); the prompt can still apply
    without one."""
    message = _message(query)
    await state.set_state(StuckRecovery.reason)
    await state.update_data(
        {
            PENDING_KEY: {
                "kind": "single",
                "action": callback_data.action.value,
                "request_id": callback_data.request_id,
                "version": callback_data.version,
                "arg": callback_data.arg,
                "at": time.time(),
                "message_id": message.message_id if message else None,
            }
        }
    )
    skip = StuckActionCb(**{**callback_data.model_dump(), "step": 2})
    await edit_or_send(
        query, *views.reason_prompt(skip, StuckDetailCb(request_id=callback_data.request_id))
    )


@router.callback_query(StuckActionCb.filter(F.step == 2))
async def apply_without_reason(
    query: CallbackQuery,
    callback_data: StuckActionCb,
    user: asyncpg.Record,
    workflow_recovery: WorkflowRecoveryManager,
    state: FSMContext,
) -> None:
    """Confirm (or "apply without a reason" at the reason step): apply the action against
    the version the admin saw."""
    await _drop_pending(state)
    screen = await _apply_single(
        workflow_recovery,
        AdminRef.of(user),
        callback_data.action,
        callback_data.request_id,
        callback_data.version,
        callback_data.arg,
        reason=None,
    )
    await edit_or_send(query, *screen)


async def _apply_single(
    manager: WorkflowRecoveryManager,
    admin: AdminRef,
    code: ActionCode,
    request_id: int,
    version: int,
    arg: int,
    *,
    reason: str | None,
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
        return views.refusal_screen(refusal_code(exc), request_id)
    return views.outcome_screen(outcome)


@router.message(StateFilter(StuckRecovery.reason), TextAnswer())
async def reason_given(
    message: Message,
    user: asyncpg.Record,
    workflow_recovery: WorkflowRecoveryManager,
    state: FSMContext,
) -> None:
    """The reason of the confirmed action or batch: apply it now."""
    pending: dict[str, Any] | None = (await state.get_data()).get(PENDING_KEY)
    await _drop_pending(state)
    if not pending or time.time() - pending["at"] > PENDING_TTL_S:
        text, markup = views.expired_screen()
        await message.answer(text, reply_markup=markup)
        return
    # PostgreSQL text cannot hold NUL
    reason = (message.text or "").replace("\x00", "").strip()[:REASON_MAX] or None
    if pending.get("message_id") and message.bot is not None:  # retire the Skip button
        with contextlib.suppress(TelegramBadRequest):
            await message.bot.edit_message_reply_markup(
                chat_id=message.chat.id, message_id=pending["message_id"], reply_markup=None
            )
    if pending["kind"] == "batch":
        batch = await _take_batch(state, pending["token"])
        if batch is None:
            text, markup = views.batch_outdated_screen()
            await message.answer(text, reply_markup=markup)
            return
        progress = await message.answer(
            views.batch_progress_text(RecoveryAction(batch["action"]), len(batch["targets"]))
        )
        screen = await _run_batch(workflow_recovery, AdminRef.of(user), batch, reason)
        await replace(progress, *screen)
        return
    text, markup = await _apply_single(
        workflow_recovery,
        AdminRef.of(user),
        ActionCode(pending["action"]),
        pending["request_id"],
        pending["version"],
        pending["arg"],
        reason=reason,
    )
    await message.answer(text, reply_markup=markup)


# --- batch ---------------------------------------------------------------------------------


@router.callback_query(StuckBatchCb.filter())
async def batch(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    callback_data: StuckBatchCb,
    workflow_recovery: WorkflowRecoveryManager,
    state: FSMContext,
) -> None:
    """Choose the action, (reassign) the assignee, then the review screen, which keeps the
    exact (request, version) list the batch will touch."""
    workflow_type, state_code = callback_data.wf, callback_data.st
    if not _valid_filter(workflow_type, state_code):
        await fresh_menu(query, callback_answer)
        return
    await _drop_pending(state)
    if callback_data.action is None:
        total = (
            await workflow_recovery.find_stuck(
                workflow_type=workflow_type, state=state_code, limit=1
            )
        ).total
        await edit_or_send(query, *views.batch_menu_screen(total, workflow_type, state_code))
        return
    action = views.ACTION_OF[callback_data.action]
    assignee_name = None
    if action is RecoveryAction.REASSIGN:
        role = views.batch_role(workflow_type, state_code)
        if role is None:
            await fresh_menu(query, callback_answer)
            return
        if callback_data.arg == 0:
            rows, total = await workflow_recovery.reassign_candidates(
                role, limit=PAGE_SIZE, offset=callback_data.page * PAGE_SIZE
            )
            await edit_or_send(
                query, *views.batch_candidates_screen(callback_data, role, rows, total)
            )
            return
        assignee = await workflow_recovery.get_user(callback_data.arg)
        if assignee is None or assignee["role"] != role:
            await fresh_menu(query, callback_answer)
            return
        assignee_name = assignee["full_name"] or str(assignee["telegram_id"])
    targets = await workflow_recovery.stuck_targets(
        workflow_type=workflow_type, state=state_code, at_most=BATCH_MAX + 1
    )
    capped, targets = len(targets) > BATCH_MAX, targets[:BATCH_MAX]
    if not targets:
        await edit_or_send(query, *views.batch_menu_screen(0, workflow_type, state_code))
        return
    materials = await workflow_recovery.preview_batch_materials(
        action, [request_id for request_id, _version in targets]
    )
    token = secrets.token_hex(4)
    await state.update_data(
        {
            BATCH_KEY: {
                "token": token,
                "action": action.value,
                "wf": workflow_type,
                "st": state_code,
                "arg": callback_data.arg,
                "targets": [list(target) for target in targets],
                "at": time.time(),
            }
        }
    )
    await edit_or_send(
        query,
        *views.batch_review_screen(
            action,
            len(targets),
            capped,
            workflow_type,
            state_code,
            materials,
            assignee_name,
            token,
            request_ids=[request_id for request_id, _version in targets],
        ),
    )


async def _take_batch(state: FSMContext, token: str) -> dict[str, Any] | None:
    """The reviewed batch named ``token``, removed from the FSM data (so a second press
    finds nothing); None when it is not the current review or has expired."""
    reviewed: dict[str, Any] | None = (await state.get_data()).get(BATCH_KEY)
    if not reviewed or reviewed["token"] != token:
        return None
    await state.update_data({BATCH_KEY: None})
    if time.time() - reviewed["at"] > PENDING_TTL_S:
        return None
    return reviewed


async def _run_batch(
    manager: WorkflowRecoveryManager, admin: AdminRef, reviewed: dict[str, Any], reason: str | None
) -> views.Screen:
    action = RecoveryAction(reviewed["action"])
    result = await manager.apply_batch(
        action,
        [(int(request_id), int(version)) for request_id, version in reviewed["targets"]],
        admin=admin,
        reason=reason,
        assignee_id=reviewed["arg"] if action is RecoveryAction.REASSIGN else None,
    )
    return views.batch_result_screen(result)


@router.callback_query(StuckBatchRunCb.filter(F.step == 1))
async def batch_reason(
    query: CallbackQuery, callback_data: StuckBatchRunCb, state: FSMContext
) -> None:
    """A reviewed batch confirmed with a reason: wait for it (or apply without one)."""
    reviewed = (await state.get_data()).get(BATCH_KEY)
    if not reviewed or reviewed["token"] != callback_data.token:
        await edit_or_send(query, *views.batch_outdated_screen())
        return
    message = _message(query)
    await state.set_state(StuckRecovery.reason)
    await state.update_data(
        {
            PENDING_KEY: {
                "kind": "batch",
                "token": callback_data.token,
                "at": time.time(),
                "message_id": message.message_id if message else None,
            }
        }
    )
    await edit_or_send(
        query,
        *views.reason_prompt(
            StuckBatchRunCb(token=callback_data.token, step=2),
            StuckListCb(wf=reviewed["wf"], st=reviewed["st"]),
        ),
    )


@router.callback_query(StuckBatchRunCb.filter(F.step == 2))
async def batch_apply(
    query: CallbackQuery,
    callback_answer: CallbackAnswer,
    callback_data: StuckBatchRunCb,
    user: asyncpg.Record,
    workflow_recovery: WorkflowRecoveryManager,
    state: FSMContext,
) -> None:
    """Confirm: run the reviewed batch (each request in its own transaction), then the counts."""
    await answer_now(query, callback_answer)  # a batch takes a while
    await _drop_pending(state)
    reviewed = await _take_batch(state, callback_data.token)
    if reviewed is None:
        await edit_or_send(query, *views.batch_outdated_screen())
        return
    action = RecoveryAction(reviewed["action"])
    await edit_or_send(query, views.batch_progress_text(action, len(reviewed["targets"])))
    screen = await _run_batch(workflow_recovery, AdminRef.of(user), reviewed, None)
    if (message := _message(query)) is not None:
        await replace(message, *screen)
